"""The query front of a sharded deployment: encode once, scatter to every shard, gather, merge, fuse.

:class:`QueryFront` is a plain class. It knows shards only through :class:`ShardClient` (an async
``top``), so it is tested with in-process fakes, runs against Ray Serve deployment handles
(:mod:`service.cluster.serve_shards`), and is what Sleuth's own grpc.aio servicer calls. It does not
import Ray.

Per request:

1. The query is encoded once, here (dense or hybrid mode), not once per shard.
2. Every shard of the *current* :class:`ShardSet` is called concurrently for its top ``depth`` BM25
   and dense hits. The set is read once at the start, so a request never mixes two index versions
   even while :meth:`QueryFront.use` switches to a new one.
3. A call that fails because its replica died (``is_retryable``: by default Ray's actor-death errors)
   is sent again, and Serve routes it to a live replica; searches are idempotent, so this is safe.
   Retries stop at the request's deadline or after ``max_attempts``.
4. A shard that still has not answered (deadline, deployment gone, any other error) is *named* in
   ``missing_shards``; its hits are left out entirely, so a result is exactly the search over the
   shards that answered, never a silent partial one.
5. Each retriever's lists are merged by score (shards share global BM25 statistics, so their scores
   are comparable) and the two merged lists are fused by :func:`retrieval.fusion.fuse`.

Example:
    >>> front = QueryFront(ShardSet("v1", (client_a, client_b)), encoder)  # doctest: +SKIP
    >>> result = await front.search("statin therapy", k=10)  # doctest: +SKIP
    >>> result.missing_shards  # doctest: +SKIP
    ()
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from retrieval.errors import InvalidRequestError
from retrieval.fusion import FusionConfig, fuse
from retrieval.types import Hit
from service.cluster.errors import ShardSetError

logger = logging.getLogger(__name__)

MODES = ("bm25", "dense", "hybrid")
MAX_K = 1000


@runtime_checkable
class ShardBackend(Protocol):
    """One shard of a sharded index, in process: its top hits as (doc_id, score), best first."""

    def bm25_top(self, query: str, k: int) -> list[tuple[str, float]]: ...

    def dense_top(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]: ...


@runtime_checkable
class QueryEncoder(Protocol):
    """Anything that encodes texts to L2-normalized vectors (every :class:`retrieval.dense.Encoder` does)."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class ShardAnswer:
    """One shard's answer to one request: its BM25 and dense top lists (empty for a retriever not asked)."""

    bm25: tuple[tuple[str, float], ...] = ()
    dense: tuple[tuple[str, float], ...] = ()


def answer(shard: ShardBackend, query: str | None, vector: np.ndarray | None, k: int) -> ShardAnswer:
    """What a shard replica computes for a request: both retrievers in one call (half the RPCs of two)."""
    bm25 = tuple((str(d), float(s)) for d, s in shard.bm25_top(query, k)) if query is not None else ()
    dense = tuple((str(d), float(s)) for d, s in shard.dense_top(vector, k)) if vector is not None else ()
    return ShardAnswer(bm25, dense)


class ShardClient(Protocol):
    """An async view of one shard (a Serve deployment handle, or an in-process shard in tests)."""

    name: str

    async def top(self, query: str | None, vector: np.ndarray | None, k: int) -> ShardAnswer: ...


@dataclass(frozen=True)
class ShardSet:
    """The shards of one index version; the unit the front switches atomically."""

    version: str
    shards: tuple[ShardClient, ...]

    def __post_init__(self) -> None:
        if not self.shards:
            raise ShardSetError(f"version {self.version!r}: a shard set needs at least one shard")
        names = Counter(shard.name for shard in self.shards)
        duplicates = sorted(name for name, count in names.items() if count > 1)
        if duplicates:
            raise ShardSetError(f"version {self.version!r}: duplicate shard names {', '.join(duplicates)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(shard.name for shard in self.shards)


@dataclass(frozen=True)
class FrontConfig:
    """Deadline and retry policy of the front, and how the merged lists are fused."""

    timeout_s: float = 2.0
    max_attempts: int = 3
    retry_backoff_s: float = 0.05
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise InvalidRequestError("timeout_s", f"must be positive, got {self.timeout_s}")
        if self.max_attempts < 1:
            raise InvalidRequestError("max_attempts", f"must be at least 1, got {self.max_attempts}")
        if self.retry_backoff_s < 0:
            raise InvalidRequestError("retry_backoff_s", f"must not be negative, got {self.retry_backoff_s}")


@dataclass(frozen=True)
class ScatterResult:
    """The merged answer of one request and what it is missing.

    ``hits`` is the final list (fused in hybrid mode); ``bm25`` and ``dense`` are the merged lists of
    each retriever (to depth). ``missing_shards`` names every shard whose hits are not in the result.
    """

    version: str
    hits: tuple[Hit, ...]
    bm25: tuple[Hit, ...]
    dense: tuple[Hit, ...]
    missing_shards: tuple[str, ...]
    retries: int

    @property
    def complete(self) -> bool:
        return not self.missing_shards


def merge_top(lists: Sequence[Sequence[tuple[str, float]]], k: int) -> list[Hit]:
    """The ``k`` best hits over several shards' lists: score descending, ties by doc id (deterministic)."""
    best = heapq.nsmallest(k, ((-score, doc_id) for hits in lists for doc_id, score in hits))
    return [Hit(doc_id, -neg) for neg, doc_id in best]


def replica_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the replica serving the call died (a retry reaches a live one)."""
    from ray.exceptions import RayActorError, WorkerCrashedError
    from ray.serve.exceptions import ReplicaUnavailableError

    return isinstance(exc, RayActorError | WorkerCrashedError | ReplicaUnavailableError)


class _ShardFailed(Exception):
    def __init__(self, shard: str, reason: str, retries: int) -> None:
        super().__init__(f"shard {shard}: {reason}")
        self.shard = shard
        self.reason = reason
        self.retries = retries


class QueryFront:
    """Scatter-gather over the shards of the current version (see the module docstring).

    Args:
        shards: the initial shard set.
        encoder: encodes queries for dense and hybrid modes (``None``: BM25 only).
        config: deadline, retries, fusion.
        is_retryable: whether a failed call may be sent again (default :func:`replica_lost`).
    """

    def __init__(
        self,
        shards: ShardSet,
        encoder: QueryEncoder | None = None,
        *,
        config: FrontConfig | None = None,
        is_retryable: Callable[[BaseException], bool] = replica_lost,
    ) -> None:
        self._shards = shards
        self._encoder = encoder
        self.config = config or FrontConfig()
        self._is_retryable = is_retryable
        self._inflight: Counter[str] = Counter()

    @property
    def shards(self) -> ShardSet:
        return self._shards

    @property
    def version(self) -> str:
        return self._shards.version

    def use(self, shards: ShardSet) -> ShardSet:
        """Route every request that starts from now on to ``shards``; returns the previous set.

        Requests already running finish on the set they started with; :meth:`drain` waits for them.
        """
        previous, self._shards = self._shards, shards
        logger.info("query front: version %s -> %s (%d shards)", previous.version, shards.version, len(shards.shards))
        return previous

    def inflight(self, version: str) -> int:
        """Requests running on ``version``'s shards."""
        return self._inflight[version]

    async def drain(self, version: str, timeout: float) -> bool:
        """Wait until no request runs on ``version`` (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while self._inflight[version] > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def search(
        self, query: str, k: int = 10, *, mode: str = "hybrid", timeout: float | None = None
    ) -> ScatterResult:
        """The top ``k`` documents for ``query`` over all shards, and the shards that did not answer."""
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequestError("query", "must be a non-empty string")
        if not 1 <= k <= MAX_K:
            raise InvalidRequestError("k", f"must be within [1, {MAX_K}], got {k}")
        if mode not in MODES:
            raise InvalidRequestError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        if mode != "bm25" and self._encoder is None:
            raise InvalidRequestError("mode", f"{mode} needs a query encoder; this front has none")
        budget = self.config.timeout_s if timeout is None else timeout
        if not budget > 0:
            raise InvalidRequestError("timeout", f"must be positive, got {budget}")
        deadline = time.monotonic() + budget
        shard_set = self._shards  # read once: the whole request runs on one version
        self._inflight[shard_set.version] += 1
        try:
            return await self._search(shard_set, query, k, mode, deadline)
        finally:
            self._inflight[shard_set.version] -= 1

    async def _search(self, shard_set: ShardSet, query: str, k: int, mode: str, deadline: float) -> ScatterResult:
        vector = None
        encoder = self._encoder
        if mode != "bm25" and encoder is not None:  # search() refused dense modes without an encoder
            vector = (await asyncio.to_thread(encoder.encode, [query]))[0]
        depth = k if mode != "hybrid" else max(k, self.config.fusion.depth)
        calls = [
            self._call(shard, query if mode != "dense" else None, vector, depth, deadline) for shard in shard_set.shards
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        answers: list[ShardAnswer] = []
        missing: list[str] = []
        retries = 0
        for shard, outcome in zip(shard_set.shards, outcomes, strict=True):
            if isinstance(outcome, _ShardFailed):
                logger.warning("version %s: %s", shard_set.version, outcome)
                missing.append(shard.name)
                retries += outcome.retries
            elif isinstance(outcome, BaseException):
                raise outcome  # cancellation, or a bug in this class: not a shard's fault
            else:
                answer_, shard_retries = outcome
                answers.append(answer_)
                retries += shard_retries
        bm25 = merge_top([a.bm25 for a in answers], depth)
        dense = merge_top([a.dense for a in answers], depth)
        if mode == "bm25":
            hits = bm25[:k]
        elif mode == "dense":
            hits = dense[:k]
        else:
            hits = fuse(bm25, dense, self.config.fusion)[:k]
        return ScatterResult(shard_set.version, tuple(hits), tuple(bm25), tuple(dense), tuple(missing), retries)

    async def _call(
        self, shard: ShardClient, query: str | None, vector: np.ndarray | None, depth: int, deadline: float
    ) -> tuple[ShardAnswer, int]:
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _ShardFailed(shard.name, "no answer before the deadline", attempt)
            try:
                return await asyncio.wait_for(shard.top(query, vector, depth), remaining), attempt
            except TimeoutError:
                raise _ShardFailed(shard.name, "no answer before the deadline", attempt) from None
            except Exception as exc:  # any shard failure: retried if its replica died, else reported missing
                attempt += 1
                if not self._is_retryable(exc) or attempt >= self.config.max_attempts:
                    first_line = next(iter(str(exc).splitlines()), "")  # Ray errors carry whole tracebacks
                    raise _ShardFailed(shard.name, f"{type(exc).__name__}: {first_line}", attempt - 1) from exc
                logger.info("shard %s: replica lost (%s); retry %d", shard.name, type(exc).__name__, attempt)
                pause = min(self.config.retry_backoff_s * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic()))
                await asyncio.sleep(pause)
