"""``sleuth serve``: load the artifacts and serve them over gRPC.

Every option of ``serve`` is defined here, grouped as ``sleuth serve --help`` shows them: what to
serve, how to listen, performance and limits, security, versions and observability, experiments
and feedback. :func:`config_from_args` turns them into one :class:`~service.config.ServerConfig`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from artifacts import ArtifactError
from service.cli.options import (
    add_encoder_runtime,
    add_ray_options,
    check_artifact,
    check_file,
    positive_float,
    positive_int,
    ray_address,
)
from service.cluster.errors import ClusterError
from service.config import DEFAULT_PORT, ServerConfig
from service.security import SecurityConfigError, check_admin_exposure, load_token


class ServeOptionError(Exception):
    """Options that do not go together, or a value out of range."""


USER_ERRORS: tuple[type[BaseException], ...] = (SecurityConfigError, ArtifactError, ServeOptionError, ClusterError)


def register(groups: Any) -> None:
    """Add ``sleuth serve`` to the parser."""
    serve = groups.root.add_parser(
        "serve", help="serve search (and linking) over gRPC; with no --index, the embedded demo"
    )
    what = serve.add_argument_group("what to serve")
    what.add_argument("--index", type=Path, help="search index directory (default: the demo index)")
    what.add_argument("--encoder", help="override the encoder named in the index manifest")
    what.add_argument("--reranker", type=Path, help="reranker model directory")
    what.add_argument(
        "--reranker-runtime", default="torch", choices=["torch", "onnx"], help="how a cross-encoder reranker runs"
    )
    what.add_argument("--kb", type=Path, help="entity-linking KB directory (default: the demo KB)")
    what.add_argument("--model", type=Path, help="entity-linking model directory (default: the demo linker)")
    what.add_argument("--registry", type=Path, help="serve the registry's active versions; Admin can then switch them")
    what.add_argument(
        "--registry-poll", type=float, default=2.0, help="seconds between checks of the registry pointer (0 = off)"
    )

    listen = serve.add_argument_group("listening")
    listen.add_argument("--host", default="localhost", help="address to bind (default localhost)")
    listen.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)")
    listen.add_argument("--grace", type=float, default=5.0, help="seconds to finish in-flight calls on shutdown")

    perf = serve.add_argument_group("performance and limits (service/serving/)")
    perf.add_argument(
        "--workers", type=positive_int, default=1, help="server processes sharing the port (SO_REUSEPORT); default 1"
    )
    perf.add_argument(
        "--threads",
        type=int,
        default=None,
        help="worker threads for search (default 4; 32 with --ray, whose threads mostly wait for shards)",
    )
    perf.add_argument(
        "--max-inflight",
        type=positive_int,
        default=256,
        help="requests in flight per worker before RESOURCE_EXHAUSTED (default 256)",
    )
    perf.add_argument("--batch-size", type=positive_int, default=32, help="query encodings per micro-batch")
    perf.add_argument("--batch-wait-ms", type=float, default=2.0, help="longest wait for a micro-batch to fill")
    add_encoder_runtime(
        perf, "onnx", "how queries are encoded (linking encodes on its model's runtime; docs/benchmarks.md)"
    )
    perf.add_argument(
        "--bf16",
        action="store_true",
        help="torch runtime only: encode queries in bfloat16 (faster on AVX512-BF16 CPUs; see serving/batching.py)",
    )
    perf.add_argument("--torch-threads", type=positive_int, help="torch threads per worker (default: cores / workers)")

    cluster = serve.add_argument_group("shards on Ray Serve (service/cluster/, docs/scaling.md)")
    add_ray_options(cluster, "serve the index's shards (an unsharded index is one shard)", "shard replica")
    cluster.add_argument("--replicas", type=positive_int, default=2, help="with --ray: replicas per shard (default 2)")
    cluster.add_argument(
        "--shard-timeout",
        type=positive_float,
        default=2.0,
        help="with --ray: seconds a shard has to answer before it is named in missing_shards (default 2.0)",
    )

    security = serve.add_argument_group("security (service/security.py)")
    security.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve TLS only")
    security.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    security.add_argument(
        "--auth-token-file", type=Path, help="require 'authorization: Bearer <token>' on every RPC but health"
    )
    security.add_argument("--no-admin", action="store_true", help="do not serve the AdminService")

    observe = serve.add_argument_group("observability")
    observe.add_argument("--metrics-port", type=int, default=0, help="Prometheus /metrics port (default 0 = off)")
    observe.add_argument("--log-queries", action="store_true", help="put query texts in the JSON access log")

    online = serve.add_argument_group("experiments and feedback (service/mlops/)")
    online.add_argument(
        "--experiment", type=Path, help="experiment JSON file (re-read on change; see service/mlops/experiments.py)"
    )
    online.add_argument(
        "--feedback-db",
        type=Path,
        default=Path("var/feedback.db"),
        help="SQLite feedback log (default var/feedback.db)",
    )
    online.add_argument("--no-feedback", action="store_true", help="do not serve the FeedbackService")
    online.add_argument("--drift-threshold", type=float, default=0.25, help="PSI that raises a drift alarm (0.25)")
    serve.set_defaults(func=run_serve)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The server configuration ``args`` describe; refuses options that do not go together."""
    if args.bf16 and args.encoder_runtime != "torch":
        raise ServeOptionError("--bf16 applies to the torch runtime: add --encoder-runtime torch")
    if args.registry is not None and args.index is not None:
        raise ArtifactError("give --index or --registry, not both")
    if not args.drift_threshold > 0:
        raise ServeOptionError(f"--drift-threshold must be positive, got {args.drift_threshold}")
    if args.ray is not None and args.workers > 1:
        raise ServeOptionError("--ray serves from one front process; scale with --replicas (or more fronts)")
    if args.ray is not None and args.index is None and args.registry is None:
        raise ServeOptionError("--ray serves an index's shards: give --index or --registry")
    config = ServerConfig(
        host=args.host,
        port=args.port,
        index=args.index,
        encoder=args.encoder,
        reranker=args.reranker,
        reranker_runtime=args.reranker_runtime,
        kb=args.kb,
        linker_model=args.model,
        threads=args.threads if args.threads is not None else (32 if args.ray is not None else 4),
        grace_seconds=args.grace,
        workers=args.workers,
        max_inflight=args.max_inflight,
        batch_max_size=args.batch_size,
        batch_max_wait_ms=args.batch_wait_ms,
        encoder_runtime=args.encoder_runtime,
        encoder_bf16=args.bf16,
        torch_threads=args.torch_threads,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        auth_token_file=args.auth_token_file,
        registry=args.registry,
        registry_poll_seconds=args.registry_poll,
        admin=not args.no_admin,
        metrics_port=args.metrics_port,
        log_queries=args.log_queries,
        experiment=args.experiment,
        feedback_db=None if args.no_feedback else args.feedback_db,
        drift_threshold=args.drift_threshold,
        ray=args.ray,
        ray_replicas=args.replicas,
        ray_cpus=args.ray_cpus,
        shard_timeout_seconds=args.shard_timeout,
    )
    # Refuse an unprotected public Admin before loading anything (the server checks again).
    check_admin_exposure(config)
    return config


def check_inputs(config: ServerConfig) -> None:
    """Refuse missing or unusable files and directories before anything loads (manifests only: cheap).

    Loading the encoder, spaCy and a KB's entity vectors takes a minute on a small machine; a
    mistyped path should not cost that minute (nor be found by every worker at once).
    """
    if not 0 <= config.port <= 65535:
        raise ServeOptionError(f"--port must be within [0, 65535], got {config.port}")
    if config.threads < 1:
        raise ServeOptionError(f"--threads must be at least 1, got {config.threads}")
    if config.registry is not None and not config.registry.is_dir():
        raise ArtifactError(f"--registry {config.registry}: no such registry directory")
    check_artifact(config.index, "search-index", "--index")
    check_artifact(config.reranker, "reranker", "--reranker")
    check_artifact(config.kb, "kb", "--kb")
    check_artifact(config.linker_model, "linker", "--model")
    check_file(config.tls_cert, "--tls-cert")
    check_file(config.tls_key, "--tls-key")
    check_file(config.experiment, "--experiment")
    if config.auth_token_file is not None:
        check_file(config.auth_token_file, "--auth-token-file")
        load_token(config.auth_token_file)  # too short, not one line: say so now


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (one process, or ``--workers N``); the inputs are checked first."""
    from service.serving.workers import run

    config = config_from_args(args)
    check_inputs(config)
    if config.ray is None:
        return run(config)
    import os

    from service.cluster import connect

    # The cluster is joined (or a private one started) before anything loads; a private cluster stops
    # when the server stops, SIGTERM included.
    with connect(ray_address(args), num_cpus=os.cpu_count() or 1):
        return run(config)
