"""``sleuth serve``: load the artifacts and serve them over gRPC."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from artifacts import ArtifactError
from service.cli import online as online_cli
from service.cli import registry as registry_cli
from service.cli.search import add_encoder_runtime
from service.config import DEFAULT_PORT, ServerConfig
from service.security import SecurityConfigError


class ServeOptionError(Exception):
    """Options that do not go together."""


USER_ERRORS: tuple[type[BaseException], ...] = (SecurityConfigError, ArtifactError, ServeOptionError)


def register(groups: Any) -> None:
    serve = groups.root.add_parser(
        "serve", help="serve search (and linking) over gRPC; with no --index, the embedded demo"
    )
    serve.add_argument("--index", type=Path, help="search index directory (default: the demo index)")
    serve.add_argument("--host", default="localhost", help="address to bind (default localhost)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)")
    serve.add_argument("--encoder", help="override the encoder named in the index manifest")
    serve.add_argument("--reranker", type=Path, help="reranker model directory")
    serve.add_argument("--kb", type=Path, help="entity-linking KB directory (default: the demo KB)")
    serve.add_argument("--model", type=Path, help="entity-linking model directory (default: the demo linker)")
    serve.add_argument("--threads", type=int, default=4, help="worker threads for search (default 4)")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds to finish in-flight calls on shutdown")
    add_serving_options(serve)
    registry_cli.add_serve_options(serve)  # --registry, --metrics-port, --log-queries, --no-admin (issue 4)
    online_cli.add_serve_options(serve)  # --experiment, --feedback-db, --no-feedback, --drift-threshold (issue 5)
    serve.set_defaults(func=run_serve)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_serving_options(serve: argparse.ArgumentParser) -> None:
    """Performance, limits and security options (issue 3: service/serving.py, limits.py, security.py)."""
    serve.add_argument(
        "--workers", type=_positive_int, default=1, help="server processes sharing the port (SO_REUSEPORT); default 1"
    )
    serve.add_argument(
        "--max-inflight",
        type=_positive_int,
        default=256,
        help="requests in flight per worker before RESOURCE_EXHAUSTED (default 256)",
    )
    serve.add_argument("--batch-size", type=_positive_int, default=32, help="query encodings per micro-batch")
    serve.add_argument("--batch-wait-ms", type=float, default=2.0, help="longest wait for a micro-batch to fill")
    add_encoder_runtime(serve, "onnx", "how queries and linking contexts are encoded (docs/benchmarks.md)")
    serve.add_argument(
        "--bf16",
        action="store_true",
        help="torch runtime only: encode queries in bfloat16 (faster on AVX512-BF16 CPUs; see batching.py)",
    )
    serve.add_argument(
        "--torch-threads", type=_positive_int, help="torch threads per worker (default: cores / workers)"
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve TLS only")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.add_argument(
        "--auth-token-file", type=Path, help="require 'authorization: Bearer <token>' on every RPC but health"
    )


def serving_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "workers": args.workers,
        "max_inflight": args.max_inflight,
        "batch_max_size": args.batch_size,
        "batch_max_wait_ms": args.batch_wait_ms,
        "encoder_runtime": args.encoder_runtime,
        "encoder_bf16": args.bf16,
        "torch_threads": args.torch_threads,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "auth_token_file": args.auth_token_file,
    }


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if args.bf16 and args.encoder_runtime != "torch":
        raise ServeOptionError("--bf16 applies to the torch runtime: add --encoder-runtime torch")
    return ServerConfig(
        host=args.host,
        port=args.port,
        index=args.index,
        encoder=args.encoder,
        reranker=args.reranker,
        kb=args.kb,
        linker_model=args.model,
        threads=args.threads,
        grace_seconds=args.grace,
        **serving_options(args),
        **registry_cli.serve_options(args),
        **online_cli.serve_options(args),
    )


def run_serve(args: argparse.Namespace) -> int:
    from service.workers import run

    return run(config_from_args(args))
