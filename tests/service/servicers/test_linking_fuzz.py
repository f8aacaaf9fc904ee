"""Property-based fuzzing of the Link RPC over real gRPC: a result or INVALID_ARGUMENT, never a crash.

The real linking pipeline (spaCy detection, the demo KB, candidate generation, prior scoring) with
the fake encoder, so no model is downloaded or run.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import linking_pb2, linking_pb2_grpc
from service.serving.loading import Services
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.service.conftest import running_server
from tests.service.serving_helpers import assert_clean

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
small = st.integers(-3, 60)
words = st.sampled_from(["Barack Obama", "visited", "Paris", "and", "the", "U.N.", "IBM", "\x00", "é", " ", "\n"])
texts = st.one_of(
    st.lists(words, max_size=12).map(" ".join),
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80),
    st.sampled_from(["", "   ", "x" * 100_001]),
)


@st.composite
def link_requests(draw: st.DrawFn) -> linking_pb2.LinkRequest:
    request = linking_pb2.LinkRequest(text=draw(texts))
    for _ in range(draw(st.integers(0, 4))):
        request.mentions.add(start=draw(st.one_of(small, int32)), end=draw(st.one_of(small, int32)))
    if draw(st.booleans()):
        request.mentions.extend(list(request.mentions))  # duplicate spans
    options = request.options
    if draw(st.booleans()):
        options.top_candidates = draw(st.one_of(st.integers(-2, 102), int32))
    if draw(st.booleans()):
        options.nil_threshold = draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1)))
    if draw(st.booleans()):
        options.coreference = draw(st.booleans())
    if draw(st.booleans()):
        options.include_nil = draw(st.booleans())
    return request


@pytest.fixture(scope="module")
def link_channel(tmp_path_factory) -> Iterator[grpc.Channel]:
    import json

    from linking import EntityLinker, KnowledgeBase, MentionDetector, load_spacy
    from retrieval.index import SearchIndex
    from service.demo import demo_kb_dir
    from service.serving.linker import LoadedLinker
    from tests.conftest import TINY_DOCS

    root = tmp_path_factory.mktemp("fuzz-link")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS), encoding="utf-8")
    encoder = FakeEncoder(TINY_KEYWORDS)
    index = SearchIndex.build(corpus, root / "index", encoder)
    kb = KnowledgeBase.from_files([demo_kb_dir() / "entities.jsonl"], [demo_kb_dir() / "aliases.tsv"])
    linker = EntityLinker(kb, encoder, detector=MentionDetector(load_spacy()))
    services = Services(searcher=Searcher(index, encoder), linker=LoadedLinker(linker, "kb@fuzz", "prior"))
    config = ServerConfig(host="127.0.0.1", port=0, threads=2)
    with running_server(services, config) as address, grpc.insecure_channel(address) as channel:
        yield channel


@FUZZ
@given(request=link_requests())
def test_random_link_requests_get_a_result_or_invalid_argument(link_channel: grpc.Channel, request) -> None:
    stub = linking_pb2_grpc.LinkingServiceStub(link_channel)
    try:
        response = stub.Link(request, timeout=60)
    except grpc.RpcError as exc:
        assert_clean(exc)
        return
    for mention in response.mentions:
        assert 0 <= mention.start < mention.end <= len(request.text)


@FUZZ
@given(payload=st.one_of(st.binary(max_size=200), st.builds(lambda r: r.SerializeToString(), link_requests())))
def test_raw_link_bytes_get_a_result_or_invalid_argument(link_channel: grpc.Channel, payload: bytes) -> None:
    try:
        link_channel.unary_unary("/sleuth.v1.LinkingService/Link")(payload, timeout=60)
    except grpc.RpcError as exc:
        assert_clean(exc)
