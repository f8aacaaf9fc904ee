"""Coalescing concurrent requests to one shard into one remote call.

A Ray Serve handle call costs the same whether it carries one query or thirty: on the development
machine the front managed ~360-390 shard calls/s in total however many shards it spread them over
(``scripts/bench_ray_front.py``), so the fan-out of every query to every shard, not the search, sets
the ceiling. :class:`BatchingShardClient` sends the requests that arrive while a call to its shard
is in flight as one ``top_batch`` call when that call returns (at most ``max_inflight`` calls per
shard, at most ``max_batch`` requests per call). Nothing waits on a timer: under light load every
request goes out alone at once, and batches grow only when requests queue anyway.

A failed batch call fails every request in it with the same exception, so the front's per-request
rules (retry on replica death, a named missing shard otherwise) apply unchanged. A request whose
caller gave up (deadline) before its batch was sent is left out of the batch.

Example:
    >>> shards = ShardSet("v1", tuple(BatchingShardClient(c) for c in deploy_version(...).shards))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.cluster.front import ShardAnswer

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ShardRequest:
    """One request's part of a batch: what :meth:`~service.cluster.front.ShardClient.top` takes."""

    query: str | None
    vector: np.ndarray | None = field(repr=False)
    k: int


class BatchShardClient(Protocol):
    """A shard that answers a list of requests in one call (``ServeShardClient`` does)."""

    name: str

    async def top_batch(self, requests: list[ShardRequest]) -> list[ShardAnswer]: ...


class BatchingShardClient:
    """A :class:`~service.cluster.front.ShardClient` that coalesces concurrent requests (module docstring)."""

    def __init__(self, inner: BatchShardClient, *, max_batch: int = 64, max_inflight: int = 2) -> None:
        if max_batch < 1 or max_inflight < 1:
            raise ValueError(f"max_batch and max_inflight must be at least 1, got {max_batch}, {max_inflight}")
        self.name = inner.name
        self.inner = inner
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.calls = 0
        self._pending: list[tuple[ShardRequest, asyncio.Future[ShardAnswer]]] = []
        self._inflight = 0

    async def top(self, query: str | None, vector: np.ndarray | None, k: int) -> ShardAnswer:
        future: asyncio.Future[ShardAnswer] = asyncio.get_running_loop().create_future()
        self._pending.append((ShardRequest(query, vector, k), future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._pending and self._inflight < self.max_inflight:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            batch = [(request, future) for request, future in batch if not future.done()]
            if not batch:
                continue
            self._inflight += 1
            self.calls += 1
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[tuple[ShardRequest, asyncio.Future[ShardAnswer]]]) -> None:
        try:
            answers = await self.inner.top_batch([request for request, _ in batch])
            if len(answers) != len(batch):
                raise RuntimeError(f"shard {self.name} answered {len(answers)} of {len(batch)} requests")
        except Exception as exc:  # handed to every waiter: the front decides per request what it means
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)
        finally:
            self._inflight -= 1
            self._dispatch()
