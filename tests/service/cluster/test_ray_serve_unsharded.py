"""``serve --ray`` on an unsharded index: one shard (``shard-000``, the index directory itself)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher, SearchRequest
from service.cluster import serve_shards
from service.cluster.errors import ClusterError
from service.cluster.remote_index import RayIndexServing
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.retrieval.test_sharding import QUERIES, medium_docs

pytestmark = pytest.mark.ray


def test_an_unsharded_index_is_served_as_one_shard_with_the_same_results(ray_cluster, tmp_path: Path) -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in medium_docs()), encoding="utf-8")
    local = Searcher(SearchIndex.build(corpus, tmp_path / "index", encoder), encoder)
    with ThreadPoolExecutor(8) as pool:
        serving = RayIndexServing(pool, replicas=1, cpus_per_replica=0.05, timeout_s=10.0)
        try:
            remote = Searcher(serving.load(tmp_path / "index"), encoder)
            assert remote.index.version == local.index.version
            assert serve_shards.deployed_versions()[local.index.version] == ["shard-000"]
            for mode in ("bm25", "dense", "hybrid"):
                for query in QUERIES:
                    request = SearchRequest(query, top_k=20, mode=mode)
                    expected, got = local.search(request), remote.search(request)
                    assert got.missing_shards == ()
                    assert [h.doc_id for h in got.hits] == [h.doc_id for h in expected.hits] != []
                    assert [h.score for h in got.hits] == pytest.approx([h.score for h in expected.hits], abs=1e-6)
        finally:
            serving.close()
        assert local.index.version not in serve_shards.deployed_versions()


def test_a_deployment_larger_than_the_cluster_is_refused_before_deploying(ray_cluster, tmp_path: Path) -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in medium_docs()), encoding="utf-8")
    index = SearchIndex.build(corpus, tmp_path / "index", encoder)
    with ThreadPoolExecutor(2) as pool:
        serving = RayIndexServing(pool, replicas=3, cpus_per_replica=1.0)  # the session's cluster has 2 CPUs
        with pytest.raises(
            ClusterError, match=r"1 shard\(s\) x 3 replica\(s\) x 1.0 CPU .* = 3 CPUs, but the cluster has 2"
        ):
            serving.load(tmp_path / "index")
    assert index.version not in serve_shards.deployed_versions()
