"""``sleuth bench``: closed-loop load against a running server (see service/bench.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.bench import RPCS, SEARCH_MODES, BenchConfig, BenchError, read_texts, run_bench
from service.cli.options import top_k
from service.security import SecurityConfigError, load_token

USER_ERRORS: tuple[type[BaseException], ...] = (BenchError,)


def register(groups: Any) -> None:
    bench = groups.root.add_parser(
        "bench",
        help="load a running server (closed loop) and report throughput, latency percentiles and errors",
        description="Closed-loop load from this process over real gRPC: N virtual users, each with its own "
        "connection, send a request, wait for the answer, send the next.",
    )
    bench.add_argument("--target", required=True, help="server address, e.g. localhost:50051")
    bench.add_argument("--rpc", default="search", choices=RPCS, help="the RPC to load")
    bench.add_argument("--mode", default="hybrid", choices=SEARCH_MODES, help="search mode (rerank = hybrid+rerank)")
    bench.add_argument("--concurrency", type=int, default=16, help="virtual users (default 16)")
    bench.add_argument("--duration", type=float, default=30.0, help="measured seconds (default 30)")
    bench.add_argument(
        "--rate", type=float, help="open loop: send this many requests/s whatever the answers (default: closed loop)"
    )
    bench.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (default 2)")
    bench.add_argument("--timeout", type=float, default=10.0, help="per-call deadline in seconds (default 10)")
    bench.add_argument("--top-k", type=top_k, default=10, help="hits per search, 1 to 1000")
    bench.add_argument("--queries", type=Path, help="queries: JSONL with a 'text' field (BEIR) or plain lines")
    bench.add_argument("--docs", type=Path, help="documents for --rpc link: JSONL with a 'text' field or lines")
    bench.add_argument("--limit", type=int, help="use only the first N queries/documents")
    bench.add_argument("--token-file", type=Path, help="send 'authorization: Bearer <token>' from this file")
    bench.add_argument("--tls-ca", type=Path, help="connect with TLS, trusting this PEM CA certificate")
    bench.add_argument("--tls-server-name", help="expected server name in its certificate (default: the host)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    source = args.docs if args.rpc == "link" else args.queries
    if source is None:
        raise BenchError("--rpc link needs --docs FILE" if args.rpc == "link" else "--rpc search needs --queries FILE")
    try:
        token = load_token(args.token_file) if args.token_file is not None else None
    except SecurityConfigError as exc:
        raise BenchError(str(exc)) from exc
    config = BenchConfig(
        target=args.target,
        texts=read_texts(source, args.limit),
        rpc=args.rpc,
        mode=args.mode,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        timeout=args.timeout,
        top_k=args.top_k,
        token=token,
        tls_ca=args.tls_ca,
        tls_server_name=args.tls_server_name,
        rate=args.rate,
    )
    report = run_bench(config)
    if args.json:
        json.dump(report.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(report.format())
    return 0
