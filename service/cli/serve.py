"""``sleuth serve``: load the artifacts and serve them over gRPC."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from service.config import DEFAULT_PORT, ServerConfig


def register(groups: Any) -> None:
    serve = groups.root.add_parser(
        "serve", help="serve search (and linking) over gRPC; with no --index, the embedded demo"
    )
    serve.add_argument("--index", type=Path, help="search index directory (default: the demo index)")
    serve.add_argument("--host", default="localhost", help="address to bind (default localhost)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)")
    serve.add_argument("--encoder", help="override the encoder named in the index manifest")
    serve.add_argument("--reranker", type=Path, help="reranker model directory")
    serve.add_argument("--threads", type=int, default=4, help="worker threads for search (default 4)")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds to finish in-flight calls on shutdown")
    serve.set_defaults(func=run_serve)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        index=args.index,
        encoder=args.encoder,
        reranker=args.reranker,
        threads=args.threads,
        grace_seconds=args.grace,
    )


def run_serve(args: argparse.Namespace) -> int:
    from service.server import load_services, serve

    config = config_from_args(args)
    services = load_services(config)
    asyncio.run(serve(config, services))
    return 0
