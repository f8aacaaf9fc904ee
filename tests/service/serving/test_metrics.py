"""/metrics after traffic: counters, histograms per RPC and stage, zero results, versions; the access log."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from artifacts.registry import Registry
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import admin_pb2, admin_pb2_grpc, search_pb2, search_pb2_grpc
from service.serving.loading import Services
from tests.service.conftest import running_server
from tests.service.lifecycle_helpers import SlowEncoder, free_port, publish_tagged

SEARCH = "sleuth.v1.SearchService/Search"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_traffic_and_each_server_has_its_own(tmp_path: Path, access_log) -> None:
    encoder = SlowEncoder(delay=0)
    registry = Registry.open(tmp_path / "registry")
    a = publish_tagged(registry, tmp_path, "A", encoder)
    b = publish_tagged(registry, tmp_path, "B", encoder)
    registry.activate(a.version)
    services = Services(searcher=Searcher(SearchIndex.load(a.path), encoder))
    port, other_port = free_port(), free_port()
    config = ServerConfig(
        host="127.0.0.1", port=0, threads=2, registry=registry.root, registry_poll_seconds=0, metrics_port=port
    )
    other = ServerConfig(host="127.0.0.1", port=0, threads=1, metrics_port=other_port)
    with running_server(services, config) as address, running_server(services, other):
        before = scrape(port)
        with grpc.insecure_channel(address) as channel:
            search = search_pb2_grpc.SearchServiceStub(channel)
            for query in ("cat", "loyal dog", "wolves"):
                search.Search(search_pb2.SearchRequest(query=query), timeout=10)
            search.Search(search_pb2.SearchRequest(query="zebra", mode="bm25"), timeout=10)  # no hit
            search.Search(search_pb2.SearchRequest(query="cat"), timeout=10, metadata=(("x-request-id", "req-42"),))
            with pytest.raises(grpc.RpcError):
                search.Search(search_pb2.SearchRequest(query="  "), timeout=10)
            admin_pb2_grpc.AdminServiceStub(channel).Activate(admin_pb2.ActivateRequest(version=b.version), timeout=30)
        after = scrape(port)
        untouched = scrape(other_port)

    assert value(before, "sleuth_requests_total", rpc=SEARCH, code="OK") == 0
    assert value(after, "sleuth_requests_total", rpc=SEARCH, code="OK") == 5
    assert value(after, "sleuth_requests_total", rpc=SEARCH, code="INVALID_ARGUMENT") == 1
    assert value(after, "sleuth_request_errors_total", rpc=SEARCH, code="INVALID_ARGUMENT") == 1
    assert value(after, "sleuth_request_latency_seconds_count", rpc=SEARCH) == 6
    for stage in ("bm25", "dense", "fuse"):
        assert value(after, "sleuth_stage_latency_seconds_count", stage=stage) >= 4, stage
    assert value(after, "sleuth_search_results_total") == 5
    assert value(after, "sleuth_search_zero_results_total") == 1
    assert value(after, "sleuth_swaps_total", kind="search-index", outcome="ok") == 1
    assert value(before, "sleuth_active_version_info", kind="search-index", version=a.version) == 1
    assert value(after, "sleuth_active_version_info", kind="search-index", version=b.version) == 1
    assert value(after, "sleuth_active_version_info", kind="search-index", version=a.version) == 0
    assert value(untouched, "sleuth_requests_total", rpc=SEARCH, code="OK") == 0

    searches = [line for line in access_log if line["rpc"] == SEARCH]
    assert len(searches) >= 6
    ok = [line for line in searches if line["status"] == "OK"]
    assert all(line["version"] == a.version and line["latency_ms"] > 0 for line in ok)
    assert any(line["request_id"] == "req-42" for line in ok)
    assert len({line["request_id"] for line in searches}) == len(searches)
    assert any(line["zero_results"] == 1 for line in ok)
    assert all("query" not in line for line in access_log)  # never the query text by default
    assert any(line["status"] == "INVALID_ARGUMENT" for line in searches)
    activate = [line for line in access_log if line["rpc"].endswith("AdminService/Activate")]
    assert activate and activate[0]["status"] == "OK"


def test_query_texts_are_logged_only_when_asked(tiny_index, fake_encoder, access_log) -> None:
    services = Services(searcher=Searcher(tiny_index, fake_encoder))
    config = ServerConfig(host="127.0.0.1", port=0, threads=1, log_queries=True)
    with running_server(services, config) as address, grpc.insecure_channel(address) as channel:
        search_pb2_grpc.SearchServiceStub(channel).Search(search_pb2.SearchRequest(query="kitten care"), timeout=10)
    assert [line["query"] for line in access_log if line["rpc"] == SEARCH] == ["kitten care"]
