"""Scatter-gather overhead of the Ray Serve shard layer: QueryFront requests/s over trivial shards.

    .venv/bin/python -m scripts.bench_ray_front [--shards S ...] [--requests N] [--concurrency C] [--batch]

The shards answer a fixed top-10 list without searching, so what is measured is the front's cost per
request (one Serve handle call per shard, the merge and the fusion) and Serve's routing, on a private
local cluster: the floor under which no sharded search on this layer can go. Prints one JSON line per
shard count, with the CPU time that the driver and every process it started (the Ray cluster: GCS,
raylet, Serve controller and replicas) spent over the measured requests, per request and per shard
call: that cost is paid whether or not other jobs share the machine, unlike the wall-clock rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from service.cluster.front import FrontConfig, QueryFront, ShardSet
from service.cluster.runtime import connect
from service.cluster.shard_batching import BatchingShardClient


class FixedShard:
    """Answers the same ten hits to every query: no search cost, only transport."""

    def __init__(self, name: str) -> None:
        self.hits = [(f"{name}-{i}", 10.0 - i) for i in range(10)]

    def bm25_top(self, query: str, k: int) -> list[tuple[str, float]]:
        return self.hits[:k]

    def dense_top(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        return self.hits[:k]


def tree_cpu_seconds(root: int | None = None) -> float:
    """User + system CPU seconds of process ``root`` (default: this one) and all its descendants, from /proc.

    Processes that end between two readings drop out of the second one, so the difference of two
    readings is a lower bound; a local Ray cluster's processes live as long as the cluster.
    """
    root = os.getpid() if root is None else root
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended while we looked
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


def load_fixed_shard(directory: str) -> FixedShard:
    return FixedShard(Path(directory).name)


async def drive(front: QueryFront, requests: int, concurrency: int) -> tuple[float, list[float], int]:
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    incomplete = 0

    async def one(i: int) -> None:
        nonlocal incomplete
        async with semaphore:
            t0 = time.perf_counter()
            result = await front.search(f"query {i}", k=10, mode="bm25", timeout=30)
            latencies.append(time.perf_counter() - t0)
            incomplete += not result.complete

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    return time.perf_counter() - started, latencies, incomplete


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", action="store_true", help="coalesce concurrent requests per shard")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with connect(None, num_cpus=2), tempfile.TemporaryDirectory(prefix="sleuth-shards-") as root:
        from service.cluster import serve_shards

        config = serve_shards.ShardDeploymentConfig(replicas=args.replicas, cpus_per_replica=0.1)
        for count in args.shards:
            dirs = {f"s{i}": Path(root) / f"s{i}" for i in range(count)}
            version = f"bench{count}"
            shard_set = serve_shards.deploy_version(version, dirs, load_fixed_shard, config=config)
            clients = shard_set.shards
            if args.batch:
                clients = tuple(BatchingShardClient(client) for client in clients)
            front = QueryFront(ShardSet(version, clients), config=FrontConfig(timeout_s=30))
            asyncio.run(drive(front, 200, args.concurrency))  # warm-up: routers learn the replicas
            cpu_before = tree_cpu_seconds()
            seconds, latencies, incomplete = asyncio.run(drive(front, args.requests, args.concurrency))
            cpu_ms = 1000 * (tree_cpu_seconds() - cpu_before)
            row = {
                "shards": count,
                "batching": args.batch,
                "calls_to_shards": sum(getattr(c, "calls", 0) for c in clients) if args.batch else None,
                "replicas_per_shard": args.replicas,
                "concurrency": args.concurrency,
                "requests_per_s": round(args.requests / seconds, 1),
                "shard_calls_per_s": round(args.requests * count / seconds, 1),
                "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
                "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 1),
                "incomplete": incomplete,
                "cpu_ms_per_request": round(cpu_ms / args.requests, 3),
                "cpu_ms_per_shard_call": round(cpu_ms / (args.requests * count), 3),
                "load": round(os.getloadavg()[0], 2),
            }
            print(json.dumps(row), flush=True)
            serve_shards.retire_version(version)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
