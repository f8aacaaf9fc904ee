"""Property-based fuzzing over real gRPC: every request gets a result or INVALID_ARGUMENT.

Thousands of random requests (typed fields with hostile values, batches, and raw bytes that are
not even valid protobuf or UTF-8); the server must never crash, never answer INTERNAL/UNKNOWN,
and never put a traceback in front of the client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import search_pb2, search_pb2_grpc
from service.serving.loading import Services
from tests.conftest import TINY_DOCS, TINY_KEYWORDS, FakeEncoder
from tests.service.conftest import running_server
from tests.service.serving_helpers import assert_clean

FUZZ = settings(
    max_examples=1000,
    deadline=None,  # a loaded CI machine is slow; correctness, not speed, is under test here
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
queries = st.one_of(
    texts,
    st.sampled_from(["cat", "loyal dog", "  ", "", "\x00", "cat\x00dog", "🐈 kitten", "x" * 2048, "x" * 2049]),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=2000, max_size=2100),
)
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1.0, 60.0, 0.5]))


@st.composite
def fusion_settings(draw: st.DrawFn) -> search_pb2.FusionSettings | None:
    if draw(st.booleans()):
        return None
    message = search_pb2.FusionSettings(
        method=draw(st.one_of(st.sampled_from(["", "rrf", "convex", "RRF", "borda"]), texts)),
        normalization=draw(st.one_of(st.sampled_from(["", "minmax", "zscore", "l2"]), texts)),
    )
    if draw(st.booleans()):
        message.rrf_k = draw(floats)
    if draw(st.booleans()):
        message.alpha = draw(floats)
    if draw(st.booleans()):
        message.depth = draw(st.one_of(int32, st.integers(-2, 1002)))
    return message


@st.composite
def search_requests(draw: st.DrawFn) -> search_pb2.SearchRequest:
    return search_pb2.SearchRequest(
        query=draw(queries),
        top_k=draw(st.one_of(int32, st.integers(-2, 1002))),
        mode=draw(st.one_of(st.sampled_from(["", "bm25", "dense", "hybrid", "Hybrid", "rerank"]), texts)),
        fusion=draw(fusion_settings()),
        rerank=draw(st.booleans()),
        rerank_depth=draw(st.one_of(int32, st.integers(-2, 1002))),
    )


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS), encoding="utf-8")
    encoder = FakeEncoder(TINY_KEYWORDS)
    index = SearchIndex.build(corpus, root / "index", encoder)
    # No batching wait: requests here arrive one at a time, and there are thousands of them.
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, batch_max_wait_ms=0.0)
    with running_server(Services(searcher=Searcher(index, encoder)), config) as address:
        yield address


@pytest.fixture(scope="module")
def channel(fuzz_target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(fuzz_target) as channel:
        yield channel


@FUZZ
@given(request=search_requests())
def test_random_search_requests_get_a_result_or_invalid_argument(channel: grpc.Channel, request) -> None:
    stub = search_pb2_grpc.SearchServiceStub(channel)
    try:
        response = stub.Search(request, timeout=30)
    except grpc.RpcError as exc:
        assert_clean(exc)
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            field = exc.details().split(":", 1)[0]
            assert field in {"query", "top_k", "mode", "rerank", "rerank_depth"} or field.startswith("fusion.")
        return
    assert [h.rank for h in response.hits] == list(range(1, len(response.hits) + 1))
    assert len(response.hits) <= max(1, request.top_k or 10)


@FUZZ
@given(payload=st.one_of(st.binary(max_size=300), st.builds(lambda r: r.SerializeToString(), search_requests())))
def test_raw_bytes_get_a_result_or_invalid_argument(channel: grpc.Channel, payload: bytes) -> None:
    call = channel.unary_unary("/sleuth.v1.SearchService/Search")  # bytes in, bytes out
    try:
        call(payload, timeout=30)
    except grpc.RpcError as exc:
        assert_clean(exc)


@settings(FUZZ, max_examples=300)
@given(
    requests=st.one_of(
        st.lists(search_requests(), max_size=6),
        st.integers(255, 258).map(lambda n: [search_pb2.SearchRequest(query="cat")] * n),
    )
)
def test_random_batches_get_results_or_invalid_argument(channel: grpc.Channel, requests) -> None:
    stub = search_pb2_grpc.SearchServiceStub(channel)
    try:
        response = stub.BatchSearch(search_pb2.BatchSearchRequest(requests=requests), timeout=30)
    except grpc.RpcError as exc:
        assert_clean(exc)
        return
    assert 1 <= len(response.responses) == len(requests) <= 256


def test_invalid_utf8_is_invalid_argument_naming_the_request(channel: grpc.Channel) -> None:
    call = channel.unary_unary("/sleuth.v1.SearchService/Search")
    bad_utf8 = b"\x0a\x02\xff\xfe"  # field 1 (query), 2 bytes, not UTF-8
    with pytest.raises(grpc.RpcError) as info:
        call(bad_utf8, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("request: malformed message")
    assert "DecodeError" not in info.value.details()


def test_oversized_messages_are_refused_by_the_explicit_limit(channel: grpc.Channel) -> None:
    call = channel.unary_unary("/sleuth.v1.SearchService/Search")
    huge = search_pb2.SearchRequest(query="x" * (5 * 1024 * 1024)).SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        call(huge, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_server_is_still_healthy_after_the_fuzzing(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    stub = search_pb2_grpc.SearchServiceStub(channel)
    assert stub.Search(search_pb2.SearchRequest(query="loyal dog"), timeout=30).hits[0].doc_id == "dogs"
