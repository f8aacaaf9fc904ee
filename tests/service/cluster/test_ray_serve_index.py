"""``serve --ray``: a sharded index whose shards answer from Ray Serve deployments.

The server keeps the single-node search path and only its shards move to Serve, so the results must
be those of the same index searched in one process; a dead replica is retried on the other one; a
shard with no replica left is named in ``missing_shards``. Version switches are in
test_ray_versions.py.
"""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher, SearchRequest
from retrieval.sharding import ShardedSearchIndex
from service.cluster import serve_shards
from service.cluster.remote_index import RayIndexServing
from service.generated.sleuth.v1 import search_pb2, search_pb2_grpc
from service.serving.loading import Services
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.retrieval.test_sharding import QUERIES, medium_docs
from tests.service.conftest import running_server

pytestmark = pytest.mark.ray


def _corpus(directory: Path, drop: int = 0) -> Path:
    path = directory / f"corpus-{drop}.jsonl"
    docs = medium_docs()[drop:]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _ranking(searcher: Searcher, query: str, mode: str) -> list[tuple[str, float]]:
    result = searcher.search(SearchRequest(query, top_k=20, mode=mode))
    assert result.missing_shards == ()
    return [(h.doc_id, h.score) for h in result.hits]


@pytest.fixture
def serving(ray_cluster):
    with ThreadPoolExecutor(16) as pool:
        ray_serving = RayIndexServing(pool, replicas=2, cpus_per_replica=0.05, timeout_s=5.0)
        try:
            yield ray_serving
        finally:
            ray_serving.close()


def test_ray_shards_answer_like_local_ones_and_survive_a_killed_replica(serving, tmp_path: Path) -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    path = tmp_path / "index"
    ShardedSearchIndex.build(_corpus(tmp_path), path, encoder, shards=3)
    local = Searcher(SearchIndex.load(path), encoder)
    remote = Searcher(serving.load(path), encoder)
    version = remote.index.version
    assert serve_shards.deployed_versions()[version] == ["shard-000", "shard-001", "shard-002"]
    for mode in ("bm25", "dense", "hybrid"):
        for query in QUERIES:
            expected = _ranking(local, query, mode)
            got = _ranking(remote, query, mode)
            assert [d for d, _ in got] == [d for d, _ in expected] != []
            assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-6)

    services = Services(remote, index_loader=serving.load, on_search_release=serving.release_searcher)
    with running_server(services) as address, grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        response = stub.Search(search_pb2.SearchRequest(query="wild wolf packs", top_k=5), timeout=30)
        assert list(response.missing_shards) == [] and response.index_version == version
        assert [h.doc_id for h in response.hits] == [d for d, _ in _ranking(local, "wild wolf packs", "hybrid")][:5]

        # SIGKILL one replica of a shard while 32 clients search: no request fails, none is partial.
        handle = serve_shards.serve.get_app_handle(serve_shards.app_name(version, "shard-001"))
        victim = handle.pid.remote().result(timeout_s=30)

        def one(i: int) -> tuple[int, list[str]]:
            if i == 40:
                os.kill(victim, signal.SIGKILL)
            reply = stub.Search(search_pb2.SearchRequest(query=QUERIES[i % len(QUERIES)], top_k=5), timeout=30)
            return len(reply.hits), list(reply.missing_shards)

        with ThreadPoolExecutor(32) as clients:
            outcomes = list(clients.map(one, range(300)))
        assert all(missing == [] and hits > 0 for hits, missing in outcomes)
        with pytest.raises(ProcessLookupError):
            os.kill(victim, 0)  # the replica did die under load


def test_a_shard_without_replicas_is_named_and_none_left_is_unavailable(serving, tmp_path: Path) -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    path = tmp_path / "index"
    ShardedSearchIndex.build(_corpus(tmp_path, drop=1), path, encoder, shards=2)
    serving.timeout_s = 1.0
    remote = Searcher(serving.load(path), encoder)
    version = remote.index.version
    lost = {d.doc_id for d in remote.index.shards[1].documents}
    services = Services(remote, index_loader=serving.load, on_search_release=serving.release_searcher)
    with running_server(services) as address, grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        serve_shards.serve.delete(serve_shards.app_name(version, "shard-001"), _blocking=True)
        response = stub.Search(search_pb2.SearchRequest(query="dog and cat", top_k=30, mode="bm25"), timeout=30)
        assert list(response.missing_shards) == ["shard-001"]
        assert response.hits and not lost & {h.doc_id for h in response.hits}
        serve_shards.serve.delete(serve_shards.app_name(version, "shard-000"), _blocking=True)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Search(search_pb2.SearchRequest(query="dog and cat", top_k=3, mode="bm25"), timeout=30)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no shard answered (shard-000, shard-001)" in raised.value.details()
