"""The ``sleuth`` command line: the parser and ``main``.

Each module in :data:`COMMAND_MODULES` has ``register(groups)``, adding its commands, and may list
``USER_ERRORS``: exception types whose message is shown to the user as is (exit status 2) instead
of a traceback. A command's options are defined in its own module only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "service.cli.search",
    "service.cli.serve",
    "service.cli.registry",
    "service.cli.bench",
    "service.cli.link",
    "service.cli.rerank",
    "service.cli.compare",
    "service.cli.online",
)


class CommandGroups:
    """Hands out sub-command groups (``sleuth eval ...``, ``sleuth train ...``), creating them once."""

    def __init__(self, root: argparse._SubParsersAction) -> None:
        self.root = root
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def group(self, name: str, help_text: str) -> argparse._SubParsersAction:
        """The ``sleuth NAME ...`` group, created on first use."""
        if name not in self._groups:
            parser = self.root.add_parser(name, help=help_text, description=help_text)
            sub = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
            self._groups[name] = sub
        return self._groups[name]


def build_parser() -> tuple[argparse.ArgumentParser, tuple[type[BaseException], ...]]:
    """The ``sleuth`` parser and the exception types every command reports as user errors."""
    parser = argparse.ArgumentParser(
        prog="sleuth", description="Sleuth: hybrid search and entity linking, served over gRPC."
    )
    parser.add_argument("--log-level", default=os.environ.get("SLEUTH_LOG_LEVEL", "INFO"), help="default INFO")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    root = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups = CommandGroups(root)
    user_errors: list[type[BaseException]] = []
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(groups)
        user_errors.extend(getattr(module, "USER_ERRORS", ()))
    return parser, tuple(user_errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sleuth`` with ``argv`` (default: the process arguments); the exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser, user_errors = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("sentence_transformers", "httpx", "bm25s", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except user_errors as exc:
        print(f"sleuth: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"sleuth: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
