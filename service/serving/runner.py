"""The serving path of a search request: admit, check the deadline, encode in a micro-batch, search.

:class:`SearchRunner` is what the servicer calls; it knows nothing of protobuf. It holds the
per-process serving machinery: the :class:`~service.serving.limits.AdmissionLimiter`, the
:class:`~service.serving.batching.EncodeBatcher` and the thread pool that runs ``Searcher.run``.

Thread counts are set deliberately by :func:`configure_threads` (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np

from retrieval.dense import Encoder
from retrieval.pipeline import Searcher, SearchRequest, SearchResult
from service.config import ServerConfig
from service.serving.batching import BatchingConfig, EncodeBatcher
from service.serving.limits import DEFAULT_MAX_INFLIGHT, AdmissionLimiter, Deadline

logger = logging.getLogger(__name__)


def default_torch_threads(workers: int) -> int:
    """Intra-op threads per worker process: the cores divided among the workers, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def encoder_factory(config: ServerConfig) -> Callable[[str], Encoder]:
    """Loads encoders by name on the configured runtime (``--encoder-runtime``), one thread share each."""
    load = runtime_encoder_factory(config)
    return lambda name: load(name, config.encoder_runtime)


def runtime_encoder_factory(config: ServerConfig) -> Callable[[str, str], Encoder]:
    """Loads encoders by name and runtime (a linker model's runtime may differ from search's), one thread share each."""
    from retrieval.onnx_encoder import load_encoder

    threads = config.torch_threads or default_torch_threads(config.workers)

    def load(name: str, runtime: str) -> Encoder:
        return load_encoder(name, runtime, threads=threads)

    return load


def configure_threads(torch_threads: int, faiss_threads: int = 1) -> None:
    """Set torch's and FAISS's thread pools for serving (call once per process, before loading).

    Why these numbers:

    * **torch intra-op = cores / workers** (one with ``--workers 2`` on 2 cores). Each worker
      process then owns one core's worth of encoder threads and the processes never oversubscribe
      the machine. torch's OpenMP threads synchronize at a barrier after every operator; when one
      of them is descheduled (another worker, another process on a shared machine) every other
      one spins waiting for it, and on this 2-core machine a 2-thread encoder under load measured
      several times *slower* than a 1-thread one. Throughput comes from batching and from worker
      processes, not from splitting a ~10-token query across cores.
    * **torch inter-op = 1**: the encoder runs one graph at a time (our batcher serializes calls).
    * **FAISS (OpenMP) = 1**: a query against a few thousand to a few hundred thousand flat
      vectors is well under a millisecond; at that size the cost of waking an OpenMP team exceeds
      the work split, and its spinning threads would steal the core the encoder needs.
    """
    import faiss
    import torch

    torch.set_num_threads(max(1, torch_threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already started in this process
        logger.debug("torch inter-op threads already fixed at %d", torch.get_num_interop_threads())
    faiss.omp_set_num_threads(max(1, faiss_threads))
    logger.info("threads: torch intra-op %d, FAISS %d", torch.get_num_threads(), max(1, faiss_threads))


def warm_up(searcher: Searcher, batch_sizes: Sequence[int] = (2, 8, 32)) -> None:
    """Run a request of each mode and encode a few batch shapes, so no client pays for first calls.

    The first encoder call at a new batch shape is slower (kernel selection, allocator growth);
    micro-batches come in many shapes, so the common ones are paid for here, before serving.
    """
    for mode in ("bm25", "dense", "hybrid"):
        searcher.search(SearchRequest("warm up the server", top_k=1, mode=mode))
    if searcher.reranker is not None:
        searcher.search(SearchRequest("warm up the server", top_k=1, rerank=True))
    for size in batch_sizes:
        searcher.encode_queries([f"warm up query number {i}" for i in range(size)])


def _run(searcher: Searcher, request: SearchRequest, vector: np.ndarray | None, deadline: Deadline) -> SearchResult:
    # Runs on a search thread, possibly after waiting in the pool's queue: re-check the deadline.
    deadline.check("search")
    return searcher.run(request, vector)


def _run_many(
    searcher: Searcher, requests: Sequence[SearchRequest], vectors: dict[int, np.ndarray], deadline: Deadline
) -> list[SearchResult]:
    results = []
    for i, request in enumerate(requests):
        deadline.check("search")
        results.append(searcher.run(request, vectors.get(i)))
    return results


class SearchRunner:
    """Runs validated search requests under admission control, deadlines and encode batching."""

    def __init__(
        self,
        executor: Executor,
        *,
        batching: BatchingConfig | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        inline_lexical: bool = True,
    ) -> None:
        self.executor = executor
        self.inline_lexical = inline_lexical
        self.batcher = EncodeBatcher(batching)
        self.limiter = AdmissionLimiter(max_inflight)

    @classmethod
    def from_config(cls, executor: Executor, config: ServerConfig) -> SearchRunner:
        batching = BatchingConfig(
            max_batch=config.batch_max_size, max_wait_ms=config.batch_max_wait_ms, bf16=config.encoder_bf16
        )
        return cls(executor, batching=batching, max_inflight=config.max_inflight)

    async def search(self, searcher: Searcher, request: SearchRequest, deadline: Deadline) -> SearchResult:
        """One request: refused at once when overloaded, dropped as soon as its deadline passes."""
        with self.limiter.admit():
            if self.inline_lexical and request.mode == "bm25" and not request.rerank:
                # BM25 alone costs a fraction of a millisecond: the hand-off to a pool thread and
                # back (and the GIL passing between them) would cost more than the search itself.
                return _run(searcher, request, None, deadline)
            vector = None
            if request.needs_vector:
                vector = await self.batcher.encode(searcher.encode_queries, request.query, deadline)
            deadline.check("search")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, _run, searcher, request, vector, deadline)

    async def batch_search(
        self, searcher: Searcher, requests: Sequence[SearchRequest], deadline: Deadline
    ) -> list[SearchResult]:
        """Many requests in one call; they cost their number against the in-flight limit."""
        with self.limiter.admit(len(requests)):
            needing = [i for i, r in enumerate(requests) if r.needs_vector]
            vectors: dict[int, np.ndarray] = {}
            if needing:
                matrix = await self.batcher.encode_many(
                    searcher.encode_queries, [requests[i].query for i in needing], deadline
                )
                vectors = dict(zip(needing, matrix, strict=True))
            deadline.check("search")
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, _run_many, searcher, requests, vectors, deadline)

    async def aclose(self) -> None:
        await self.batcher.aclose()
