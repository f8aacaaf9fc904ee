"""Shards on Ray Serve behind the QueryFront: the in-process answers, no lost request when a replica
is killed under load, an atomic version switch, and a named missing shard when a shard is gone."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from service.cluster.front import FrontConfig, QueryFront, ScatterResult, ShardSet
from service.cluster.shard_batching import BatchingShardClient
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.service.cluster.shards import KeywordShard, LocalShardClient, write_shards

pytestmark = pytest.mark.ray

SPLIT = {"s0": ["cats", "dogs", "kitten"], "s1": ["birds", "wolves", "fish"]}
QUERIES = ["a cat hunts mice", "loyal dog", "wild canines in packs", "fish in water", "young kitten", "pet birds"]
MODES = ("bm25", "dense", "hybrid")


@pytest.fixture(scope="module")
def serve_shards(ray_cluster):
    from service.cluster import serve_shards

    serve_shards.ensure_serve()
    yield serve_shards
    for version in serve_shards.deployed_versions():
        serve_shards.retire_version(version)


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("shards")
    return {
        "v1": write_shards(root / "v1", SPLIT, delay_s=0.005),  # batches in flight when a replica is killed
        "v2": write_shards(root / "v2", SPLIT, suffix="-v2"),
    }


@pytest.fixture(scope="module")
def v1(serve_shards, shard_dirs) -> ShardSet:
    config = serve_shards.ShardDeploymentConfig(replicas=2, cpus_per_replica=0.1)
    return serve_shards.deploy_version("v1", shard_dirs["v1"], KeywordShard.load, config=config)


def local_front(dirs: dict[str, Path], version: str) -> QueryFront:
    clients = tuple(LocalShardClient(name, KeywordShard.load(path)) for name, path in dirs.items())
    return QueryFront(ShardSet(version, clients), FakeEncoder(TINY_KEYWORDS))


def batched(shard_set: ShardSet) -> ShardSet:
    return ShardSet(shard_set.version, tuple(BatchingShardClient(client) for client in shard_set.shards))


@pytest.mark.parametrize("batching", [False, True], ids=["per-request", "batched"])
def test_serve_shards_answer_like_in_process_shards(v1: ShardSet, shard_dirs, batching: bool) -> None:
    remote = QueryFront(batched(v1) if batching else v1, FakeEncoder(TINY_KEYWORDS))
    local = local_front(shard_dirs["v1"], "v1")

    async def both() -> list[tuple[ScatterResult, ScatterResult]]:
        requests = [(query, mode) for query in QUERIES for mode in MODES]
        # Concurrently, so that the batching clients do coalesce requests.
        got = await asyncio.gather(*(remote.search(q, k=4, mode=m) for q, m in requests))
        expected = [await local.search(q, k=4, mode=m) for q, m in requests]
        return list(zip(got, expected, strict=True))

    for got, expected in asyncio.run(both()):
        assert got.complete
        assert got.hits == expected.hits and got.bm25 == expected.bm25 and got.dense == expected.dense


async def load_loop(
    front: QueryFront, total: int, concurrency: int, on_progress
) -> list[ScatterResult | BaseException]:
    """``total`` requests, ``concurrency`` at a time; ``on_progress(done)`` runs after each completes."""
    semaphore = asyncio.Semaphore(concurrency)
    done = 0

    async def one(i: int) -> ScatterResult:
        nonlocal done
        async with semaphore:
            try:
                return await front.search(QUERIES[i % len(QUERIES)], k=4, mode="hybrid", timeout=20)
            finally:
                done += 1
                await on_progress(done)

    return await asyncio.gather(*(one(i) for i in range(total)), return_exceptions=True)


def replica_pids(app: str, count: int, timeout: float = 60) -> list[int]:
    """The process ids of ``count`` live replicas of ``app``, asked through its handle (Serve spreads the
    calls); waits for Serve to replace a replica killed by an earlier test (7-12 s)."""
    from ray import serve

    handle = serve.get_app_handle(app)
    deadline = time.monotonic() + timeout
    pids: set[int] = set()
    while time.monotonic() < deadline:
        pids = {handle.pid.remote().result() for _ in range(20)}
        if len(pids) >= count:
            return sorted(pids)
        time.sleep(0.5)
    raise AssertionError(f"{app}: {len(pids)} of {count} replicas answer after {timeout} s")


@pytest.mark.parametrize("batching", [False, True], ids=["per-request", "batched"])
def test_killing_a_replica_under_load_loses_no_request(v1: ShardSet, serve_shards, shard_dirs, batching: bool) -> None:
    shard_set = batched(v1) if batching else v1
    front = QueryFront(shard_set, FakeEncoder(TINY_KEYWORDS), config=FrontConfig(max_attempts=5))
    expected = {q: asyncio.run(local_front(shard_dirs["v1"], "v1").search(q, k=4)).hits for q in QUERIES}
    victim = replica_pids(serve_shards.app_name("v1", "s0"), 2)[0]
    killed = []

    async def kill_once(done: int) -> None:
        if done == 60 and not killed:
            os.kill(victim, signal.SIGKILL)  # mid-load: calls are in flight on the victim
            killed.append(done)

    results = asyncio.run(load_loop(front, total=300, concurrency=32, on_progress=kill_once))

    assert killed, "the replica was never killed"
    failures = [r for r in results if isinstance(r, BaseException) or not r.complete]
    assert failures == []
    for i, result in enumerate(results):
        assert result.hits == expected[QUERIES[i % len(QUERIES)]]


def test_version_switch_under_load_never_mixes_versions(v1: ShardSet, serve_shards, shard_dirs) -> None:
    config = serve_shards.ShardDeploymentConfig(replicas=1, cpus_per_replica=0.1)
    v2 = serve_shards.deploy_version("v2", shard_dirs["v2"], KeywordShard.load, config=config)
    front = QueryFront(v1, FakeEncoder(TINY_KEYWORDS))

    async def scenario() -> tuple[list, bool]:
        async def switch(done: int) -> None:
            if done == 40:
                front.use(v2)

        results = await load_loop(front, total=120, concurrency=8, on_progress=switch)
        drained = await front.drain("v1", timeout=10)
        return results, drained

    results, drained = asyncio.run(scenario())
    assert drained
    versions = set()
    for result in results:
        assert not isinstance(result, BaseException) and result.complete
        suffixes = {hit.doc_id.endswith("-v2") for hit in result.hits + result.bm25 + result.dense}
        assert suffixes == {result.version == "v2"}, result
        versions.add(result.version)
    assert versions == {"v1", "v2"}

    assert sorted(serve_shards.retire_version("v1")) == ["sleuth:v1:s0", "sleuth:v1:s1"]
    assert "v1" not in serve_shards.deployed_versions()
    assert asyncio.run(front.search("loyal dog", k=2)).hits[0].doc_id == "dogs-v2"


def test_a_shard_with_no_replica_left_is_named_within_the_deadline(serve_shards) -> None:
    from ray import serve

    clients = {client.name: client for client in serve_shards.attach_version("v2").shards}
    front = QueryFront(ShardSet("v2", tuple(clients.values())), FakeEncoder(TINY_KEYWORDS))
    serve.delete(clients["s1"].app, _blocking=True)

    async def bounded() -> ScatterResult:
        # The outer bound only keeps a hanging front from hanging the suite.
        return await asyncio.wait_for(front.search("wild canines and loyal dogs", k=4, timeout=2.0), 30)

    result = asyncio.run(bounded())
    assert result.missing_shards == ("s1",)
    assert result.hits and all(hit.doc_id in {"cats-v2", "dogs-v2", "kitten-v2"} for hit in result.hits)


def test_a_shard_that_cannot_load_fails_its_version_by_name(serve_shards, shard_dirs, tmp_path: Path) -> None:
    config = serve_shards.ShardDeploymentConfig(replicas=1, cpus_per_replica=0.1, constructor_retries=1)
    dirs = {"s0": shard_dirs["v2"]["s0"], "s1": tmp_path / "no-such-shard"}
    with pytest.raises(serve_shards.ShardDeployError) as caught:
        serve_shards.deploy_version("broken", dirs, KeywordShard.load, config=config)
    message = str(caught.value)
    assert message.startswith(f"version 'broken': shard 's1' from {tmp_path / 'no-such-shard'}: FileNotFoundError")
    assert "s0" not in message.split(":", 1)[1].split("from")[0]


@pytest.mark.parametrize(("version", "shards"), [("v 1", {"s0": "x"}), ("v1", {"s:0": "x"}), ("v1", {})])
def test_bad_version_or_shard_names_are_refused_before_any_deploy(version: str, shards: dict) -> None:
    from service.cluster.errors import ShardSetError
    from service.cluster.serve_shards import deploy_version

    with pytest.raises(ShardSetError, match=r"name|no shards"):
        deploy_version(version, shards, KeywordShard.load)
