"""Closed-loop load generator for a running Sleuth server, over real gRPC.

``concurrency`` virtual users each send one request, wait for its answer, and send the next, for
``duration`` seconds after a ``warmup``; the calls that complete within those ``duration`` seconds
are counted (throughput = completions / duration), whenever they started. Each user has its own
channel (its own TCP connection), as separate clients would, so a server running several worker
processes behind SO_REUSEPORT sees its load spread across them.

With ``rate`` set the load is *open loop* instead: requests are sent at that fixed rate whatever
the answers (spread over ``concurrency`` connections), as independent users would; each latency
is measured from the request's scheduled send time, so a stalled server cannot hide its queueing
by slowing the sender down ("coordinated omission"). This is how to ask "what is p99 at N/s?".

To leave as much CPU as possible to the server when both share a machine, requests are serialized
once up front and responses are not parsed (only counted); everything else is a normal client.

Example:
    >>> config = BenchConfig(target="localhost:50051", texts=("aspirin",), concurrency=4, duration=5)
    >>> print(run_bench(config).format())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from service.generated.sleuth.v1 import search_pb2

logger = logging.getLogger(__name__)

SEARCH_MODES = ("bm25", "dense", "hybrid", "rerank")
RPCS = ("search", "link")
METHODS = {"search": "/sleuth.v1.SearchService/Search", "link": "/sleuth.v1.LinkingService/Link"}


class BenchError(Exception):
    """The benchmark cannot run: no texts, an unreadable file, an unknown mode."""


@dataclass(frozen=True)
class BenchConfig:
    """What to send, where, how hard and for how long."""

    target: str
    texts: tuple[str, ...]
    rpc: str = "search"
    mode: str = "hybrid"
    concurrency: int = 16
    duration: float = 30.0
    warmup: float = 2.0
    timeout: float = 10.0
    top_k: int = 10
    token: str | None = None
    tls_ca: Path | None = None
    tls_server_name: str | None = None
    rate: float | None = None  # open loop: requests per second; None = closed loop

    def __post_init__(self) -> None:
        if self.rpc not in RPCS:
            raise BenchError(f"--rpc must be one of {', '.join(RPCS)}, got {self.rpc!r}")
        if self.rpc == "search" and self.mode not in SEARCH_MODES:
            raise BenchError(f"--mode must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")
        if not self.texts:
            raise BenchError("no queries or documents to send")
        if self.concurrency < 1 or self.duration <= 0 or self.warmup < 0 or self.timeout <= 0:
            raise BenchError("concurrency must be >= 1, duration and timeout > 0, warmup >= 0")
        if self.rate is not None and not (0 < self.rate <= 100_000):
            raise BenchError(f"--rate must be within (0, 100000] requests/s, got {self.rate}")


@dataclass(frozen=True)
class BenchReport:
    """Throughput, latency percentiles of successful calls (ms) and errors by status code."""

    rpc: str
    mode: str
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    offered_rate: float | None = None  # open loop only
    client_cpu: float = math.nan  # cores this load generator used (CPU seconds per second), to judge its share

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        errors = ", ".join(f"{code} {n}" for code, n in sorted(self.errors.items())) or "none"
        what = f"{self.rpc} ({self.mode})" if self.rpc == "search" else self.rpc
        load = f"open loop at {self.offered_rate:g}/s over" if self.offered_rate else "concurrency"
        return (
            f"{what}, {load} {self.concurrency}, {self.duration_s:.1f} s: {self.requests} requests, "
            f"{self.ok} ok\n"
            f"  throughput {self.throughput:.1f} /s\n"
            f"  latency ms: p50 {self.p50_ms:.1f}  p95 {self.p95_ms:.1f}  p99 {self.p99_ms:.1f}  "
            f"mean {self.mean_ms:.1f}  max {self.max_ms:.1f}\n"
            f"  errors: {errors}"
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def read_texts(path: Path, limit: int | None = None) -> tuple[str, ...]:
    """Texts from a JSONL file (the ``text`` field, as BEIR queries and our documents have) or plain lines."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    texts: list[str] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchError(f"{path}: not valid JSON lines ({exc})") from exc
            text = record.get("text") or record.get("query") or ""
        else:
            text = line
        if text.strip():
            texts.append(text)
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        raise BenchError(f"{path} holds no texts")
    return tuple(texts)


def encoded_requests(config: BenchConfig) -> list[bytes]:
    """The requests to cycle through, serialized once."""
    if config.rpc == "search":
        mode, rerank = ("hybrid", True) if config.mode == "rerank" else (config.mode, False)
        return [
            search_pb2.SearchRequest(query=text, top_k=config.top_k, mode=mode, rerank=rerank).SerializeToString()
            for text in config.texts
        ]
    from service.generated.sleuth.v1 import linking_pb2

    return [linking_pb2.LinkRequest(text=text).SerializeToString() for text in config.texts]


def _channel(config: BenchConfig) -> grpc.aio.Channel:
    options = [
        ("grpc.use_local_subchannel_pool", 1),  # one TCP connection per virtual user
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ]
    if config.tls_ca is None:
        return grpc.aio.insecure_channel(config.target, options=options)
    if config.tls_server_name:
        options.append(("grpc.ssl_target_name_override", config.tls_server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=config.tls_ca.read_bytes())
    return grpc.aio.secure_channel(config.target, credentials, options=options)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def _run(config: BenchConfig) -> BenchReport:
    payloads = encoded_requests(config)
    metadata = (("authorization", f"Bearer {config.token}"),) if config.token else None
    channels = [_channel(config) for _ in range(config.concurrency)]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = 0
    try:
        await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), config.timeout) for ch in channels))
        start = time.perf_counter()
        cpu_start = _cpu_seconds()
        measure_from = start + config.warmup
        end = measure_from + config.duration

        async def user(channel: grpc.aio.Channel) -> None:
            nonlocal counter
            call = channel.unary_unary(METHODS[config.rpc])  # bytes in, bytes out
            while True:
                payload = payloads[counter % len(payloads)]
                counter += 1
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                code = None
                try:
                    await call(payload, timeout=config.timeout, metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                t1 = time.perf_counter()
                if not measure_from <= t1 <= end:  # count the calls that complete in the window
                    continue
                if code is None:
                    latencies.append(t1 - t0)
                else:
                    errors[code] += 1

        async def one(call: Any, payload: bytes, scheduled: float) -> None:
            code = None
            try:
                await call(payload, timeout=config.timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            t1 = time.perf_counter()
            if scheduled < measure_from:
                return
            if code is None:
                latencies.append(t1 - scheduled)
            else:
                errors[code] += 1

        async def open_loop(rate: float) -> None:
            calls = [ch.unary_unary(METHODS[config.rpc]) for ch in channels]
            pending: set[asyncio.Task[None]] = set()
            n = 0
            while (scheduled := start + n / rate) < end:
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(calls[n % len(calls)], payloads[n % len(payloads)], scheduled))
                pending.add(task)
                task.add_done_callback(pending.discard)
                n += 1
            await asyncio.gather(*pending)

        if config.rate is not None:
            await open_loop(config.rate)
        else:
            await asyncio.gather(*(user(ch) for ch in channels))
        client_cpu = (_cpu_seconds() - cpu_start) / max(1e-9, time.perf_counter() - start)
    finally:
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return BenchReport(
        rpc=config.rpc,
        mode=config.mode if config.rpc == "search" else "-",
        concurrency=config.concurrency,
        duration_s=config.duration,
        requests=len(ms) + sum(errors.values()),
        ok=len(ms),
        throughput=len(ms) / config.duration,
        p50_ms=percentile(ms, 50),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        mean_ms=(sum(ms) / len(ms)) if ms else math.nan,
        max_ms=ms[-1] if ms else math.nan,
        errors=dict(errors),
        offered_rate=config.rate,
        client_cpu=client_cpu,
    )


def run_bench(config: BenchConfig) -> BenchReport:
    """Run the load in a fresh event loop of this process; blocks for ``warmup + duration`` seconds."""
    try:
        return asyncio.run(_run(config))
    except TimeoutError as exc:
        raise BenchError(f"cannot connect to {config.target} within {config.timeout:.0f} s") from exc
