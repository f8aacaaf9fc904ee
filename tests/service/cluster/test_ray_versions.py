"""``serve --ray`` switching index versions under load: no response mixes versions.

Two versions of a tiny sharded index differ by the documents they hold (the second drops d02, so
every full ranking differs); each response is checked against a local search of the very version it
names: its hits and scores must be that version's, whatever the moment of the switch. After the
switch the old version's shards are retired.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from artifacts.registry import Registry
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher, SearchRequest
from retrieval.sharding import ShardedSearchIndex
from service.cluster import serve_shards
from service.cluster.remote_index import RayIndexServing
from service.config import ServerConfig
from service.generated.sleuth.v1 import search_pb2, search_pb2_grpc
from service.serving.loading import Services
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.retrieval.test_sharding import QUERIES
from tests.service.cluster.test_ray_serve_index import _corpus
from tests.service.conftest import event_loop_thread

pytestmark = pytest.mark.ray


def test_a_version_switch_under_load_never_mixes_versions(ray_cluster, tmp_path: Path) -> None:
    from service.serving.builder import create_server

    encoder = FakeEncoder(TINY_KEYWORDS)
    registry = Registry.open(tmp_path / "registry")
    infos = [
        registry.publish(
            "search-index", lambda out, d=drop: ShardedSearchIndex.build(_corpus(tmp_path, d), out, encoder, shards=2)
        ).info
        for drop in (2, 3)
    ]
    registry.activate(infos[0].version)
    local = {info.version: Searcher(SearchIndex.load(info.path), encoder) for info in infos}
    expected = {
        (version, query): [(h.doc_id, h.score) for h in searcher.search(SearchRequest(query, top_k=50)).hits]
        for version, searcher in local.items()
        for query in QUERIES
    }
    assert all(expected[infos[0].version, q] != expected[infos[1].version, q] for q in QUERIES)  # versions differ

    with ThreadPoolExecutor(16) as pool:
        serving = RayIndexServing(pool, replicas=1, cpus_per_replica=0.05, timeout_s=10.0)
        services = Services(
            Searcher(serving.load(infos[0].path), encoder),
            index_loader=serving.load,
            on_search_release=serving.release_searcher,
        )
        config = ServerConfig(host="127.0.0.1", port=0, threads=4, registry=registry.root, registry_poll_seconds=0)
        loop = event_loop_thread()

        async def start():
            running = await create_server(config, services)
            await running.start()
            return running

        running = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
        stop = threading.Event()
        try:
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = search_pb2_grpc.SearchServiceStub(channel)

                def client(i: int) -> list[tuple[str, str, list[tuple[str, float]]]]:
                    seen = []
                    n = i
                    while not stop.is_set() or len(seen) < 5:
                        query = QUERIES[n % len(QUERIES)]
                        n += 1
                        reply = stub.Search(search_pb2.SearchRequest(query=query, top_k=50), timeout=60)
                        assert list(reply.missing_shards) == []
                        seen.append((reply.index_version, query, [(h.doc_id, h.score) for h in reply.hits]))
                    return seen

                with ThreadPoolExecutor(8) as clients:
                    futures = [clients.submit(client, i) for i in range(8)]
                    swap = asyncio.run_coroutine_threadsafe(running.lifecycle.activate(infos[1].version), loop).result(
                        120
                    )
                    assert swap.version == infos[1].version
                    after = stub.Search(search_pb2.SearchRequest(query="cat", top_k=10), timeout=60)
                    stop.set()
                    answers = [answer for future in futures for answer in future.result()]
                assert after.index_version == infos[1].version
            versions = {version for version, _, _ in answers}
            assert versions == {infos[0].version, infos[1].version}  # the load spanned the switch
            for version, query, hits in answers:
                want = expected[version, query]
                assert [d for d, _ in hits] == [d for d, _ in want], (version, query)
                assert [s for _, s in hits] == pytest.approx([s for _, s in want], abs=1e-5)
            assert infos[0].version not in serve_shards.deployed_versions()  # retired once released
        finally:
            stop.set()
            asyncio.run_coroutine_threadsafe(running.stop(0), loop).result(30)
            serving.close()
