"""Running the server: one process, or N worker processes sharing one port (``--workers N``).

Why processes: the serving path holds the GIL for much of each request (gRPC message handling,
protobuf, the asyncio loop, Python parts of BM25 and fusion), so one process tops out near one
core however many threads it has. N processes, each a complete server with its own copy of the
index and models, use N cores.

How they share the port: every worker binds the same address with ``SO_REUSEPORT`` (gRPC's
``grpc.so_reuseport`` option; Linux and BSDs) and the kernel spreads incoming *connections*
across the listening sockets. This is the approach of grpc's own Python multiprocessing example.
A connection stays with its worker, so balance needs several client connections (one per client
process or per channel); a single client channel lands on a single worker.

Memory: each worker loads its own index and models, so the server's resident memory is about
N times that of one worker (measured figures in docs/benchmarks.md). FAISS and BM25 arrays are
read into each process; nothing is shared copy-on-write, since the workers are spawned, not
forked (forking a process that has started torch or grpc threads is unsafe).

The supervisor (the parent) loads nothing. On SIGTERM or SIGINT it forwards SIGTERM to the
workers, each of which stops accepting calls, finishes in-flight ones within the grace period
and exits 0; the supervisor then exits 0. If a worker dies on its own, the supervisor stops the
others and exits 1 (restarting is the job of systemd, Kubernetes or whatever runs us).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from service.config import ServerConfig
from service.serving.runner import configure_threads, default_torch_threads, warm_up

logger = logging.getLogger(__name__)

LoadFn = Callable[[ServerConfig], "object"]
"""Builds the served objects from the config (``service.serving.builder.load_services``); must be picklable."""


def _default_load(config: ServerConfig) -> object:
    from service.serving.loading import load_services

    return load_services(config)


def serve_in_this_process(config: ServerConfig, load: LoadFn = _default_load) -> int:
    """Set the thread counts, load, warm up and serve until SIGTERM/SIGINT; returns the exit status."""
    from service.serving.builder import serve

    started = time.perf_counter()
    configure_threads(config.torch_threads or default_torch_threads(config.workers), config.faiss_threads)
    services = load(config)
    logger.info("warming up: a request of each mode, encoder batches of %s", (2, 8, config.batch_max_size))
    warm_up(services.searcher, (2, 8, config.batch_max_size))  # type: ignore[attr-defined]
    asyncio.run(serve(config, services, started=started))  # type: ignore[arg-type]
    return 0


def _worker_main(config: ServerConfig, load: LoadFn, number: int, log_level: int) -> None:
    logging.basicConfig(
        level=log_level, format=f"%(asctime)s %(levelname)s [worker {number}] %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("sentence_transformers", "httpx", "bm25s", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        status = serve_in_this_process(config, load)
    except Exception as exc:  # a worker that cannot load or bind: one clear line; the supervisor stops the rest
        logger.debug("worker %d failed", number, exc_info=exc)
        logger.error("worker %d cannot serve: %s: %s", number, type(exc).__name__, exc)
        status = 2
    sys.exit(status)


def reserve_port(host: str) -> tuple[socket.socket, int]:
    """A free port, held by a bound (not listening) SO_REUSEPORT socket so no one else takes it.

    The workers bind the same port with SO_REUSEPORT; a socket that is bound but not listening
    receives no connections, so the reservation does not steal any.
    """
    name = host.strip("[]")
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1" if name == "localhost" else name, 0))
    return holder, int(holder.getsockname()[1])


def run_workers(config: ServerConfig, load: LoadFn = _default_load) -> int:
    """Start ``config.workers`` server processes on one port; supervise them until a stop signal."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("--workers needs SO_REUSEPORT, which this platform lacks")
    holder = None
    if config.port == 0:
        holder, port = reserve_port(config.host)
        config = replace(config, port=port)
    context = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    workers = [
        context.Process(target=_worker_main, args=(config, load, n, level), name=f"sleuth-worker-{n}", daemon=False)
        for n in range(config.workers)
    ]
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                worker.terminate()  # SIGTERM: a graceful stop for the worker

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for worker in workers:
            worker.start()
        logger.info("%d workers serving on %s (pids %s)", len(workers), config.address, [w.pid for w in workers])
        while True:
            alive = [w for w in workers if w.is_alive()]
            if not alive:
                break
            if not stopping and len(alive) < len(workers):
                dead = [w for w in workers if not w.is_alive()]
                logger.error("worker(s) %s exited unexpectedly; stopping the others", [w.name for w in dead])
                status = 1
                forward(signal.SIGTERM, None)
            multiprocessing.connection.wait([w.sentinel for w in alive], timeout=1.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if holder is not None:
            holder.close()
    codes = [w.exitcode for w in workers]
    if any(code not in (0, -signal.SIGTERM) for code in codes):
        status = 1
    logger.info("workers exited with %s", codes)
    return status


def run(config: ServerConfig, load: LoadFn = _default_load) -> int:
    """``sleuth serve``: one process, or a supervisor of ``config.workers`` processes."""
    if config.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {config.workers}")
    if config.workers == 1:
        return serve_in_this_process(config, load)
    return run_workers(config, load)
