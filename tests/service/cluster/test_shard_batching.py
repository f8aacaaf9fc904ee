"""Request coalescing per shard: concurrent requests share calls, each gets its own answer, a failed
call fails each of its requests, and a request whose caller gave up is not sent."""

from __future__ import annotations

import asyncio

import pytest

from service.cluster.front import FrontConfig, QueryFront, ShardAnswer, ShardSet, answer
from service.cluster.shard_batching import BatchingShardClient, ShardRequest
from tests.conftest import TINY_DOCS, TINY_KEYWORDS, FakeEncoder
from tests.service.cluster.shards import KeywordShard, LocalShardClient

ALL = {d["_id"]: f"{d['title']}\n{d['text']}" for d in TINY_DOCS}
QUERIES = ["a cat hunts mice", "loyal dog", "wild canines in packs", "fish in water", "young kitten", "pet birds"]


class LocalBatchShard:
    """``top_batch`` over an in-process shard, recording each call's batch size; optionally slow or failing."""

    def __init__(self, name: str, shard: KeywordShard, *, delay: float = 0.01, fail: Exception | None = None):
        self.name = name
        self.shard = shard
        self.delay = delay
        self.fail = fail
        self.batches: list[int] = []
        self.seen: list[str | None] = []

    async def top_batch(self, requests: list[ShardRequest]) -> list[ShardAnswer]:
        self.batches.append(len(requests))
        self.seen.extend(r.query for r in requests)
        await asyncio.sleep(self.delay)  # a remote call takes time; requests queue meanwhile
        if self.fail is not None:
            raise self.fail
        return [answer(self.shard, r.query, r.vector, r.k) for r in requests]


def test_concurrent_requests_share_calls_and_get_their_own_answers() -> None:
    inner = LocalBatchShard("all", KeywordShard(ALL))
    batched = QueryFront(ShardSet("v1", (BatchingShardClient(inner, max_batch=8, max_inflight=1),)))
    plain = QueryFront(ShardSet("v1", (LocalShardClient("all", KeywordShard(ALL)),)))
    queries = [QUERIES[i % len(QUERIES)] for i in range(40)]

    async def scenario():
        return await asyncio.gather(*(batched.search(q, k=3, mode="bm25") for q in queries))

    results = asyncio.run(scenario())
    for query, result in zip(queries, results, strict=True):
        assert result.hits == asyncio.run(plain.search(query, k=3, mode="bm25")).hits
    assert sum(inner.batches) == 40 and max(inner.batches) == 8 and len(inner.batches) < 40
    assert inner.batches[0] == 1  # the first request does not wait for company


def test_hybrid_requests_through_batches_equal_the_plain_front() -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    inner = LocalBatchShard("all", KeywordShard(ALL))
    batched = QueryFront(ShardSet("v1", (BatchingShardClient(inner),)), encoder)
    plain = QueryFront(ShardSet("v1", (LocalShardClient("all", KeywordShard(ALL)),)), encoder)

    async def scenario():
        return await asyncio.gather(*(batched.search(q, k=4) for q in QUERIES))

    for query, result in zip(QUERIES, asyncio.run(scenario()), strict=True):
        assert result.hits == asyncio.run(plain.search(query, k=4)).hits


class Gone(Exception):
    pass


def test_a_failed_call_fails_each_of_its_requests_and_the_front_names_the_shard() -> None:
    inner = LocalBatchShard("s0", KeywordShard(ALL), fail=Gone("replica died"))
    front = QueryFront(
        ShardSet("v1", (BatchingShardClient(inner, max_inflight=1),)),
        config=FrontConfig(max_attempts=2, retry_backoff_s=0.001),
        is_retryable=lambda exc: isinstance(exc, Gone),
    )

    async def scenario():
        return await asyncio.gather(*(front.search(q, k=3, mode="bm25") for q in QUERIES))

    results = asyncio.run(scenario())
    assert all(r.missing_shards == ("s0",) and r.retries == 1 for r in results)
    assert sum(inner.batches) == 2 * len(QUERIES)  # every request was sent twice, no more


def test_a_request_whose_caller_gave_up_is_not_sent() -> None:
    inner = LocalBatchShard("s0", KeywordShard(ALL), delay=0.2)
    client = BatchingShardClient(inner, max_inflight=1)

    async def scenario():
        first = asyncio.create_task(client.top("dog", None, 3))
        await asyncio.sleep(0.01)  # the first call is in flight; the next two queue
        abandoned = asyncio.create_task(client.top("cat", None, 3))
        kept = asyncio.create_task(client.top("fish", None, 3))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        return await first, await kept

    first, kept = asyncio.run(scenario())
    assert inner.seen == ["dog", "fish"] and inner.batches == [1, 1]
    assert [d for d, _ in first.bm25] == ["dogs"] and [d for d, _ in kept.bm25] == ["fish"]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchingShardClient(LocalBatchShard("s0", KeywordShard(ALL)), max_batch=0)
