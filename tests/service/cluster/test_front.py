"""The query front without a cluster: shard merging equals one unsharded shard, replica deaths are
retried, unanswered shards are named, and a version switch never mixes versions."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from retrieval.errors import InvalidRequestError
from service.cluster.errors import ShardSetError
from service.cluster.front import FrontConfig, QueryFront, ShardAnswer, ShardSet, merge_top, replica_lost
from tests.conftest import TINY_DOCS, TINY_KEYWORDS, FakeEncoder
from tests.service.cluster.shards import KeywordShard, LocalShardClient

ALL = {d["_id"]: f"{d['title']}\n{d['text']}" for d in TINY_DOCS}
SPLIT = {"s0": ["cats", "dogs", "kitten"], "s1": ["birds", "wolves", "fish"]}
QUERIES = ["a cat hunts mice", "loyal dog", "wild canines in packs", "fish in water", "young kitten"]


class ReplicaGone(Exception):
    """Stands in for Ray's actor-death errors."""


def sharded(version: str = "v1") -> ShardSet:
    return ShardSet(
        version,
        tuple(LocalShardClient(name, KeywordShard({i: ALL[i] for i in ids})) for name, ids in SPLIT.items()),
    )


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_sharded_results_equal_one_unsharded_shard(mode: str) -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    whole = QueryFront(ShardSet("v1", (LocalShardClient("all", KeywordShard(ALL)),)), encoder)
    split = QueryFront(sharded(), encoder)
    for query in QUERIES:
        expected = run(whole.search(query, k=4, mode=mode))
        got = run(split.search(query, k=4, mode=mode))
        assert got.hits == expected.hits and got.hits, query
        assert got.complete and got.retries == 0


def test_merge_top_orders_by_score_then_doc_id() -> None:
    merged = merge_top([[("b", 2.0), ("d", 1.0)], [("a", 2.0), ("c", 3.0)]], 3)
    assert [h.doc_id for h in merged] == ["c", "a", "b"]


class FlakyClient:
    """Fails ``failures`` times with ``error``, then answers like ``inner``."""

    def __init__(self, inner: LocalShardClient, failures: int, error: type[Exception] = ReplicaGone) -> None:
        self.name = inner.name
        self.inner = inner
        self.failures = failures
        self.error = error
        self.calls = 0

    async def top(self, query, vector, k) -> ShardAnswer:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("replica died mid-call")
        return await self.inner.top(query, vector, k)


def test_a_lost_replica_is_retried_and_the_result_is_complete() -> None:
    base = sharded()
    flaky = FlakyClient(base.shards[1], failures=2)
    front = QueryFront(
        ShardSet("v1", (base.shards[0], flaky)),
        FakeEncoder(TINY_KEYWORDS),
        config=FrontConfig(max_attempts=3, retry_backoff_s=0.001),
        is_retryable=lambda exc: isinstance(exc, ReplicaGone),
    )
    expected = run(QueryFront(base, FakeEncoder(TINY_KEYWORDS)).search("wild canines", k=4))
    result = run(front.search("wild canines", k=4))
    assert result.complete and result.retries == 2 and flaky.calls == 3
    assert result.hits == expected.hits


def test_retries_stop_at_max_attempts_and_name_the_shard() -> None:
    base = sharded()
    flaky = FlakyClient(base.shards[1], failures=100)
    front = QueryFront(
        ShardSet("v1", (base.shards[0], flaky)),
        config=FrontConfig(max_attempts=3, retry_backoff_s=0.001),
        is_retryable=lambda exc: isinstance(exc, ReplicaGone),
    )
    result = run(front.search("wild canines", k=4, mode="bm25"))
    assert result.missing_shards == ("s1",) and flaky.calls == 3
    # The answer is exactly shard s0's: wolves (in s1) is absent, dogs (in s0) present.
    assert [h.doc_id for h in result.hits] == ["dogs"]


def test_other_errors_are_not_retried_and_name_the_shard() -> None:
    base = sharded()
    broken = FlakyClient(base.shards[0], failures=100, error=RuntimeError)
    front = QueryFront(ShardSet("v1", (broken, base.shards[1])), is_retryable=lambda exc: isinstance(exc, ReplicaGone))
    result = run(front.search("wild canines", k=4, mode="bm25"))
    assert result.missing_shards == ("s0",) and broken.calls == 1
    assert [h.doc_id for h in result.hits] == ["wolves"]


class HangingClient:
    def __init__(self, name: str) -> None:
        self.name = name
        self.release = asyncio.Event()

    async def top(self, query, vector, k) -> ShardAnswer:
        await self.release.wait()
        return ShardAnswer()


def test_a_shard_that_never_answers_is_named_at_the_deadline() -> None:
    async def scenario():
        front = QueryFront(ShardSet("v1", (sharded().shards[0], HangingClient("s1"))))
        # The outer bound only keeps a broken front from hanging the test suite.
        return await asyncio.wait_for(front.search("loyal dog", k=3, mode="bm25", timeout=0.2), 10)

    result = run(scenario())
    assert result.missing_shards == ("s1",)
    assert [h.doc_id for h in result.hits] == ["dogs"]


def test_ray_actor_death_is_retryable_and_a_gone_deployment_is_not() -> None:
    from ray.exceptions import ActorDiedError, RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    assert replica_lost(ActorDiedError()) and replica_lost(RayActorError())
    assert replica_lost(ReplicaUnavailableError("replica-1"))
    assert not replica_lost(DeploymentUnavailableError("shard"))
    assert not replica_lost(ValueError("bad request"))


def test_a_version_switch_never_mixes_versions() -> None:
    async def scenario():
        gate = HangingClient("s0")
        old = ShardSet("v1", (gate, sharded().shards[1]))
        new = ShardSet("v2", (LocalShardClient("s0", KeywordShard({"dogs": ALL["dogs"]})),))
        front = QueryFront(old)
        started = asyncio.create_task(front.search("loyal dog wolves", k=3, mode="bm25"))
        await asyncio.sleep(0.05)  # the first request is now waiting on v1's s0
        assert front.inflight("v1") == 1
        assert front.use(new) is old
        during = await front.search("loyal dog wolves", k=3, mode="bm25")
        assert not await front.drain("v1", timeout=0.05)  # v1 still has a request in flight
        gate.release.set()
        before = await started
        assert await front.drain("v1", timeout=5)
        return before, during

    before, during = run(scenario())
    assert before.version == "v1" and [h.doc_id for h in before.hits] == ["wolves"]
    assert during.version == "v2" and [h.doc_id for h in during.hits] == ["dogs"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"query": " "}, "query"),
        ({"query": "cat", "k": 0}, "k"),
        ({"query": "cat", "mode": "sparse"}, "mode"),
        ({"query": "cat", "mode": "dense"}, "mode"),  # no encoder
        ({"query": "cat", "mode": "bm25", "timeout": 0}, "timeout"),
    ],
)
def test_bad_requests_name_the_field(kwargs: dict, field: str) -> None:
    front = QueryFront(sharded())
    with pytest.raises(InvalidRequestError) as caught:
        run(front.search(**kwargs))
    assert caught.value.field == field


def test_shard_sets_need_unique_names() -> None:
    one = LocalShardClient("s0", KeywordShard(ALL))
    with pytest.raises(ShardSetError, match="duplicate shard names s0"):
        ShardSet("v1", (one, one))
    with pytest.raises(ShardSetError, match="at least one shard"):
        ShardSet("v1", ())


def test_keyword_shard_dense_scores_are_cosines() -> None:
    shard = KeywordShard(ALL)
    vector = FakeEncoder(TINY_KEYWORDS).encode(["cat"])[0]
    top = shard.dense_top(vector, 2)
    assert top[0][0] in {"cats", "kitten"} and np.isclose(np.linalg.norm(vector), 1.0)
