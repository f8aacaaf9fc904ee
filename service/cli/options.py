"""Options and input checks several commands share (one definition each, so spelling, help and errors agree).

Every command checks its arguments and input files with these *before* it loads a model, a KB or
an index, so a typo costs a second, not the minute an encoder or spaCy takes to load.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from artifacts import ArtifactError, Manifest
from retrieval.pipeline import MAX_TOP_K


class InputError(Exception):
    """A command-line input that cannot be used: a missing or unreadable file, a value out of range."""


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def top_k(text: str) -> int:
    """An argparse type: a hit count within [1, 1000], for a local index and a server alike.

    The protocol reads ``top_k = 0`` as "unset" (10 hits); refusing 0 here keeps ``-k 0`` from
    meaning "an error" locally and "10 hits" through ``--target``.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer within [1, {MAX_TOP_K}], got {text!r}") from None
    if not 1 <= value <= MAX_TOP_K:
        raise argparse.ArgumentTypeError(f"must be within [1, {MAX_TOP_K}], got {value}")
    return value


def nonblank(text: str) -> str:
    """An argparse type: text that is not empty or whitespace only (a query, a text to link)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty or whitespace only")
    return text


def check_file(path: Path | None, option: str) -> None:
    """Refuse a missing, non-regular or unreadable input file, naming the option (nothing for None)."""
    if path is None:
        return
    if not path.exists():
        raise InputError(f"{option} {path}: no such file")
    if not path.is_file():
        raise InputError(f"{option} {path}: not a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{option} {path}: not readable (permission denied)")


def check_artifact(path: Path | None, kind: str, option: str) -> None:
    """Refuse a directory that is not a ``kind`` artifact (its manifest only: cheap, nothing loaded).

    The error keeps its type (not found, incompatible, corrupt) and gains the option's name.
    """
    if path is None:
        return
    try:
        Manifest.read(path, kind=kind)
    except ArtifactError as exc:
        raise type(exc)(f"{option} {exc}") from exc


def check_new_directory(path: Path | None, overwrite: bool) -> None:
    """Refuse an output directory that exists, unless ``--overwrite`` (nothing for None: the registry)."""
    if path is not None and path.exists() and not overwrite:
        raise InputError(f"--out {path}: already exists (add --overwrite to replace it)")


def add_encoder_runtime(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None, what: str, default_text: str = ""
) -> None:
    """The ``--encoder-runtime`` option (retrieval/onnx_encoder.py) of the commands that encode.

    ``default`` None: the command decides (``default_text`` says how, e.g. the model's runtime)."""
    from retrieval.onnx_encoder import RUNTIMES

    parser.add_argument(
        "--encoder-runtime",
        default=default,
        choices=RUNTIMES,
        help=f"{what}: torch (the reference), onnx (ONNX Runtime, float32: the same vectors) or onnx-int8 "
        f"(int8 weights: fastest, slightly different vectors); default {default_text or default}",
    )


LOCAL_RAY = "local"
"""``--ray`` given without an address: start a private local Ray cluster for this command."""


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def add_ray_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str, cpus_help: str) -> None:
    """``--ray [ADDRESS]`` and ``--ray-cpus``: run ``what`` on a Ray cluster (service/cluster/)."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        default=None,
        metavar="ADDRESS",
        help=f"{what} on Ray: the cluster at ADDRESS (host:port of its head), or without ADDRESS a private "
        "local cluster that stops with this command (default: no Ray)",
    )
    parser.add_argument(
        "--ray-cpus",
        type=positive_float,
        default=0.5,
        help=f"with --ray: CPUs each {cpus_help} reserves from Ray's scheduler (default: 0.5)",
    )


def ray_address(args: argparse.Namespace) -> str | None:
    """The ``--ray`` address for :func:`service.cluster.connect` (None: a private local cluster)."""
    return None if args.ray == LOCAL_RAY else args.ray


def add_client_security(parser: argparse.ArgumentParser, when: str = "--target") -> None:
    """``--token-file``, ``--tls-ca`` and ``--tls-server-name``: how a client command reaches a secured server."""
    parser.add_argument("--token-file", type=Path, help=f"{when}: send 'authorization: Bearer <token>' from this file")
    parser.add_argument("--tls-ca", type=Path, help=f"{when}: connect with TLS, trusting this PEM CA certificate")
    parser.add_argument(
        "--tls-server-name", help=f"{when}: expected server name in its certificate (default: the host)"
    )


def connect(args: argparse.Namespace) -> Any:
    """A :class:`~service.client.SleuthClient` for ``args.target`` with the security options of
    :func:`add_client_security`; their files are checked (and the token read) before connecting."""
    from service.client import SleuthClient
    from service.security import SecurityConfigError, load_token

    check_file(args.token_file, "--token-file")
    check_file(args.tls_ca, "--tls-ca")
    try:
        token = load_token(args.token_file) if args.token_file is not None else None
        return SleuthClient(args.target, tls_ca=args.tls_ca, tls_server_name=args.tls_server_name, token=token)
    except (SecurityConfigError, OSError) as exc:  # an empty token file, a CA file that is not PEM
        raise InputError(str(exc)) from None


def rpc_failure(target: str, exc: Any) -> InputError:
    """A failed call to a server as a one-line user error: ``server ADDR answered CODE: details``."""
    return InputError(f"server {target} answered {exc.code().name}: {exc.details()}")
