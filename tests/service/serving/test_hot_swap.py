"""Hot swap: concurrent load through two activations and a rollback, through the Admin RPC.

Every document of version X carries the tag [X] in its title, so a response built from two
versions would show two tags; each response must name the version whose tags it carries.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import grpc
import pytest

from artifacts.registry import Registry
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import admin_pb2, admin_pb2_grpc, search_pb2, search_pb2_grpc
from service.serving.lifecycle import Lifecycle
from service.serving.loading import Services
from service.serving.state import ServingState
from tests.service.conftest import event_loop_thread, running_server
from tests.service.lifecycle_helpers import SlowEncoder, publish_tagged, tag_of

QUERIES = ("cat purrs", "loyal dog", "wolves hunt", "parrots fly", "goldfish water", "kitten")


@pytest.fixture
def three_versions(tmp_path: Path):
    encoder = SlowEncoder()
    registry = Registry.open(tmp_path / "registry")
    infos = {tag: publish_tagged(registry, tmp_path, tag, encoder) for tag in ("A", "B", "C")}
    registry.activate(infos["A"].version)
    return registry, infos, encoder


def test_serving_state_releases_a_version_after_its_last_request() -> None:
    released: list[str] = []
    state = ServingState("search-index", "one", "v1", on_release=lambda version, value: released.append(version))
    first, second = state.acquire(), state.acquire()
    assert state.swap("two", "v2") == "v1"
    assert (first.value, first.version, state.current) == ("one", "v1", "two")
    assert [(s.version, s.inflight, s.draining) for s in state.status()] == [("v2", 0, False), ("v1", 2, True)]
    first.release()
    first.release()  # idempotent
    assert released == []
    second.release()
    assert released == ["v1"] and [s.version for s in state.status()] == ["v2"]
    state.swap("three", "v3")  # nothing in flight on v2: released at once
    assert released == ["v1", "v2"]


def test_lifecycle_swap_waits_for_in_flight_requests(three_versions) -> None:
    registry, infos, encoder = three_versions
    state = ServingState("search-index", Searcher(SearchIndex.load(infos["A"].path), encoder), infos["A"].version)
    lifecycle = Lifecycle(state, registry)
    loop = event_loop_thread()
    import asyncio

    held = state.acquire()  # a request in flight on A
    result = asyncio.run_coroutine_threadsafe(lifecycle.activate(infos["B"].content_id[:6]), loop).result(60)
    assert (result.version, result.previous_version) == (infos["B"].version, infos["A"].version)
    assert registry.pointer("search-index").version == infos["B"].version
    draining = [s for s in lifecycle.served() if s.draining]
    assert [(s.version, s.inflight) for s in draining] == [(infos["A"].version, 1)]
    assert held.value.index.version == infos["A"].version  # the old request still reads A
    held.release()
    assert not any(s.draining for s in lifecycle.served()) and state.released == [infos["A"].version]


def test_concurrent_load_through_two_swaps_and_a_rollback(three_versions) -> None:
    registry, infos, encoder = three_versions
    by_version = {info.version: tag for tag, info in infos.items()}
    index = SearchIndex.load(registry.active("search-index").path)
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, registry=registry.root, registry_poll_seconds=0)
    records: list[tuple[float, float, str, set[str]]] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(address: str, number: int) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            i = number
            while not stop.is_set():
                i += 1
                started = time.monotonic()
                try:
                    if i % 5 == 0:
                        batch = [search_pb2.SearchRequest(query=q, top_k=3) for q in QUERIES[:3]]
                        responses = list(
                            stub.BatchSearch(search_pb2.BatchSearchRequest(requests=batch), timeout=30).responses
                        )
                    else:
                        mode = ("hybrid", "bm25", "dense")[i % 3]
                        responses = [
                            stub.Search(search_pb2.SearchRequest(query=QUERIES[i % 6], top_k=4, mode=mode), timeout=30)
                        ]
                except grpc.RpcError as exc:
                    failures.append(exc)
                    continue
                ended = time.monotonic()
                with lock:
                    for response in responses:
                        tags = {tag_of(h.title) for h in response.hits} | {
                            h.doc_id.rsplit("-", 1)[1] for h in response.hits
                        }
                        records.append((started, ended, response.index_version, tags))
                    if len({r.index_version for r in responses}) != 1:
                        failures.append(AssertionError("a batch mixed versions"))

    with running_server(Services(searcher=Searcher(index, encoder)), config) as address:
        threads = [threading.Thread(target=client, args=(address, n)) for n in range(4)]
        for thread in threads:
            thread.start()
        marks: list[tuple[float, float, str]] = []  # (call started, call returned, version now served)
        with grpc.insecure_channel(address) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            time.sleep(0.4)
            for step in ("B", "C", "rollback"):
                called = time.monotonic()
                if step == "rollback":
                    reply = admin.Rollback(admin_pb2.RollbackRequest(), timeout=60)
                else:
                    reply = admin.Activate(admin_pb2.ActivateRequest(version=infos[step].version), timeout=60)
                marks.append((called, time.monotonic(), reply.version))
                time.sleep(0.4)
            stop.set()
            for thread in threads:
                thread.join(60)
            status = admin.Status(admin_pb2.StatusRequest(), timeout=10)

    assert failures == []
    assert [m[2] for m in marks] == [infos["B"].version, infos["C"].version, infos["B"].version]
    assert len(records) > 50
    # No response mixes versions: every hit carries the tag of the version the response names.
    for _, _, version, tags in records:
        assert tags <= {by_version[version]}, (version, tags)
    assert {r[2] for r in records} == set(by_version)
    # A request that started after a swap returned (and ended before the next began) saw the new version.
    boundaries = [*marks, (float("inf"), float("inf"), "")]
    for (_, returned, version), (next_called, _, _) in itertools.pairwise(boundaries):
        window = [r for r in records if r[0] > returned and r[1] < next_called]
        assert window and {r[2] for r in window} == {version}
    # Everything old was released; the server and the registry agree on B, with A then C before it.
    assert [(s.version, s.draining) for s in status.served] == [(infos["B"].version, False)]
    assert status.swaps == 3 and status.registry_active["search-index"] == infos["B"].version
    assert registry.pointer("search-index").history == (infos["A"].version,)


def test_a_server_follows_the_registry_pointer_moved_elsewhere(three_versions) -> None:
    """``sleuth registry activate`` without --target (or Admin on another worker): the server follows."""
    registry, infos, encoder = three_versions
    index = SearchIndex.load(infos["A"].path)
    config = ServerConfig(host="127.0.0.1", port=0, threads=1, registry=registry.root, registry_poll_seconds=0.1)
    services = Services(searcher=Searcher(index, encoder))
    with running_server(services, config) as address, grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        assert stub.Search(search_pb2.SearchRequest(query="cat"), timeout=10).index_version == infos["A"].version
        registry.activate(infos["C"].version)
        deadline = time.monotonic() + 30
        while stub.Search(search_pb2.SearchRequest(query="cat"), timeout=10).index_version != infos["C"].version:
            assert time.monotonic() < deadline, "the server did not follow the registry pointer"
            time.sleep(0.05)
