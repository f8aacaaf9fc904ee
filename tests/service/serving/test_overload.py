"""Overload: past the in-flight bound, RESOURCE_EXHAUSTED at once; recovery when load drops."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import search_pb2, search_pb2_grpc
from service.serving.loading import Services
from tests.conftest import TINY_KEYWORDS
from tests.service.serving_helpers import GatedEncoder, serving


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_past_capacity_requests_are_refused_at_once_and_the_server_recovers(tiny_index) -> None:
    encoder = GatedEncoder(TINY_KEYWORDS)
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, max_inflight=3, batch_max_wait_ms=0.0)
    with (
        serving(Services(searcher=Searcher(tiny_index, encoder)), config) as handle,
        grpc.insecure_channel(handle.address) as channel,
    ):
        stub = search_pb2_grpc.SearchServiceStub(channel)
        # Fill the server: one request holds the encoder, two more wait behind it.
        held = [stub.Search.future(search_pb2.SearchRequest(query=f"slow cat {i}"), timeout=60) for i in range(3)]
        assert encoder.entered.wait(30)
        assert _wait_for(lambda: handle.limiter.inflight == 3)

        # Drive it well past capacity from many threads: every extra request is refused, and
        # each refusal arrives while the encoder is still held shut, i.e. without queueing.
        def extra(i: int) -> grpc.StatusCode:
            try:
                stub.Search(search_pb2.SearchRequest(query=f"dog {i}", mode="bm25"), timeout=30)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(extra, range(40)))
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert not any(f.done() for f in held), "the held requests finished before the gate opened"
        assert handle.limiter.refused >= 40

        # Health stays answerable under overload (it is not behind the limiter).
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.Search(search_pb2.SearchRequest(query="fish"), timeout=10)
        assert "overloaded" in info.value.details() and "Traceback" not in info.value.details()

        # Load drops: the held requests complete, and new ones are served again.
        encoder.release()
        assert all(f.result(timeout=30).hits for f in held)
        assert _wait_for(lambda: handle.limiter.inflight == 0)
        codes_after = [stub.Search(search_pb2.SearchRequest(query="kitten"), timeout=30) for _ in range(10)]
        assert all(r.hits[0].doc_id == "kitten" for r in codes_after)


def test_batch_requests_count_their_items_against_the_bound(tiny_index) -> None:
    encoder = GatedEncoder(TINY_KEYWORDS)
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, max_inflight=4, batch_max_wait_ms=0.0)
    with (
        serving(Services(searcher=Searcher(tiny_index, encoder)), config) as handle,
        grpc.insecure_channel(handle.address) as channel,
    ):
        stub = search_pb2_grpc.SearchServiceStub(channel)
        held = stub.Search.future(search_pb2.SearchRequest(query="slow cat"), timeout=60)
        assert encoder.entered.wait(30)
        batch = search_pb2.BatchSearchRequest(requests=[search_pb2.SearchRequest(query="dog")] * 4)
        with pytest.raises(grpc.RpcError) as info:
            stub.BatchSearch(batch, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        encoder.release()
        assert held.result(timeout=30).hits
        assert len(stub.BatchSearch(batch, timeout=30).responses) == 4
