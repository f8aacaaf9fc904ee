from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.client import SleuthClient
from service.generated.sleuth.v1 import search_pb2


def test_search_returns_ranked_hits_with_stage_scores(tiny_server: str, tiny_index) -> None:
    with SleuthClient(tiny_server) as client:
        response = client.search("loyal dog barks", top_k=3)
    assert response.mode == "hybrid"
    assert response.index_version == tiny_index.version
    assert response.server_time_ms > 0
    assert [h.rank for h in response.hits] == [1, 2, 3]
    top = response.hits[0]
    assert (top.doc_id, top.title) == ("dogs", "Dogs")
    assert top.snippet.startswith("Dogs are loyal canines.")
    assert top.stages.HasField("bm25") and top.stages.HasField("dense") and top.stages.HasField("fused")
    assert not top.stages.HasField("rerank")
    assert top.score == pytest.approx(top.stages.fused)


def test_modes_and_fusion_settings_reach_the_pipeline(tiny_server: str) -> None:
    with SleuthClient(tiny_server) as client:
        bm25 = client.search("kitten", mode="bm25", top_k=5)
        convex = client.search(
            "wolves hunt", fusion=search_pb2.FusionSettings(method="convex", alpha=0.0, depth=10), top_k=1
        )
        lexical = client.search("wolves hunt", mode="bm25", top_k=1)
    assert [h.doc_id for h in bm25.hits] == ["kitten"]
    assert not bm25.hits[0].stages.HasField("dense")
    assert convex.hits[0].doc_id == lexical.hits[0].doc_id


def test_batch_search_answers_each_request(tiny_server: str) -> None:
    requests = [search_pb2.SearchRequest(query=q, top_k=1) for q in ("cat", "goldfish water", "parrots")]
    with SleuthClient(tiny_server) as client:
        response = client.batch_search(requests)
    assert [r.hits[0].doc_id for r in response.responses] == ["cats", "fish", "birds"]


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"query": "   "}, "query"),
        ({"query": "x" * 3000}, "query"),
        ({"query": "cat", "top_k": -1}, "top_k"),
        ({"query": "cat", "top_k": 5000}, "top_k"),
        ({"query": "cat", "mode": "fuzzy"}, "mode"),
        ({"query": "cat", "fusion": search_pb2.FusionSettings(method="borda")}, "fusion.method"),
        ({"query": "cat", "fusion": search_pb2.FusionSettings(alpha=2.0)}, "fusion.alpha"),
        ({"query": "cat", "rerank": True}, "rerank"),
    ],
)
def test_invalid_requests_get_invalid_argument_naming_the_field(tiny_server: str, request_kwargs, field) -> None:
    with grpc.insecure_channel(tiny_server) as channel:
        stub = search_pb2_grpc_stub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Search(search_pb2.SearchRequest(**request_kwargs), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}:")
    assert "Traceback" not in info.value.details()


def test_batch_errors_name_the_item(tiny_server: str) -> None:
    requests = [search_pb2.SearchRequest(query="cat"), search_pb2.SearchRequest(query="cat", top_k=9999)]
    with SleuthClient(tiny_server) as client, pytest.raises(grpc.RpcError) as info:
        client.batch_search(requests)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("requests[1].top_k:")
    with SleuthClient(tiny_server) as client, pytest.raises(grpc.RpcError) as info:
        client.batch_search([])
    assert info.value.details().startswith("requests:")


def test_health_is_serving_and_reflection_lists_the_services(tiny_server: str) -> None:
    with grpc.insecure_channel(tiny_server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "sleuth.v1.SearchService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"sleuth.v1.SearchService", "grpc.health.v1.Health"} <= names


def search_pb2_grpc_stub(channel: grpc.Channel):
    from service.generated.sleuth.v1 import search_pb2_grpc

    return search_pb2_grpc.SearchServiceStub(channel)
