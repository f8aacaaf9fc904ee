from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifacts import CorruptArtifactError, IncompatibleArtifactError, Manifest
from retrieval.errors import InvalidRequestError
from retrieval.fusion import FusionConfig
from retrieval.index import SearchIndex
from retrieval.pipeline import MAX_QUERY_CHARS, Searcher, SearchRequest, snippet
from tests.conftest import FakeEncoder


def test_index_build_writes_a_complete_manifest(tiny_index: SearchIndex, tiny_corpus) -> None:
    manifest = Manifest.read(tiny_index.path, kind="search-index")
    assert manifest.format_version == 1
    assert manifest.stats["doc_count"] == 6
    assert manifest.params["bm25"] == {"k1": 0.9, "b": 0.4, "method": "lucene"}
    assert manifest.params["faiss"]["index_type"] == "flat"
    assert manifest.params["encoder"]["name"] == "fake-keywords"
    assert len(manifest.inputs["corpus"]["sha256"]) == 64
    assert {"numpy", "bm25s", "faiss-cpu"} <= set(manifest.libraries)
    assert {"docs.jsonl", "dense.faiss"} <= set(manifest.files)
    manifest.verify(tiny_index.path)


def test_modes_rank_as_their_retrievers_say(tiny_index: SearchIndex, fake_encoder: FakeEncoder) -> None:
    searcher = Searcher(tiny_index, fake_encoder)
    bm25 = searcher.search(SearchRequest("kitten", top_k=3, mode="bm25")).hits
    assert [h.doc_id for h in bm25] == ["kitten"]  # only it contains the stem "kitten"
    assert bm25[0].dense is None and bm25[0].fused is None

    dense = searcher.search(SearchRequest("feline pet", top_k=2, mode="dense")).hits
    # "feline" is a keyword of the fake encoder: the cat document, the only one saying feline, wins.
    assert dense[0].doc_id == "cats"
    assert dense[0].bm25 is None and dense[0].score == pytest.approx(dense[0].dense)

    hybrid = searcher.search(SearchRequest("canine dogs", top_k=6, mode="hybrid")).hits
    assert [h.rank for h in hybrid] == list(range(1, len(hybrid) + 1))
    assert hybrid[0].doc_id == "dogs"  # first in both lists
    assert hybrid[0].bm25 is not None and hybrid[0].dense is not None
    assert hybrid[0].fused == pytest.approx(2 / 61)


def test_convex_fusion_alpha_moves_between_retrievers(tiny_index: SearchIndex, fake_encoder: FakeEncoder) -> None:
    searcher = Searcher(tiny_index, fake_encoder)
    query = "wolves hunt"
    lexical_only = searcher.search(SearchRequest(query, mode="hybrid", fusion=FusionConfig(method="convex", alpha=0.0)))
    bm25 = searcher.search(SearchRequest(query, mode="bm25"))
    assert lexical_only.hits[0].doc_id == bm25.hits[0].doc_id


def test_batch_search_encodes_all_queries_in_one_call(tiny_index: SearchIndex, fake_encoder: FakeEncoder) -> None:
    searcher = Searcher(tiny_index, fake_encoder)
    fake_encoder.calls.clear()
    requests = [SearchRequest(q) for q in ("cat", "dog", "fish tank")] + [SearchRequest("bird", mode="bm25")]
    results = searcher.batch_search(requests)
    assert fake_encoder.calls == [3]
    assert [r.hits[0].doc_id for r in results] == [searcher.search(r).hits[0].doc_id for r in requests]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": " \t\n"}, "query"),
        ({"query": "x" * (MAX_QUERY_CHARS + 1)}, "query"),
        ({"query": "a\x00b"}, "query"),
        ({"query": "ok", "top_k": 0}, "top_k"),
        ({"query": "ok", "top_k": 1001}, "top_k"),
        ({"query": "ok", "mode": "semantic"}, "mode"),
        ({"query": "ok", "rerank_depth": 0}, "rerank_depth"),
    ],
)
def test_invalid_requests_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        SearchRequest(**kwargs)
    assert info.value.field == field


def test_rerank_without_a_reranker_is_an_invalid_request(tiny_index, fake_encoder) -> None:
    with pytest.raises(InvalidRequestError, match="no reranker"):
        Searcher(tiny_index, fake_encoder).search(SearchRequest("cat", rerank=True))


class ReverseReranker:
    """Scores candidates by reversed fused rank: checks the pipeline applies reranker scores."""

    version = "reverse@test"

    def score(self, query, candidates, index, query_vector) -> np.ndarray:
        assert query_vector is not None
        return np.array([c.rank for c in candidates], dtype=float)


def test_reranker_scores_reorder_only_the_rerank_depth(tiny_index, fake_encoder) -> None:
    searcher = Searcher(tiny_index, fake_encoder, ReverseReranker())
    plain = searcher.search(SearchRequest("cat kitten dog", top_k=6)).hits
    reranked = searcher.search(SearchRequest("cat kitten dog", top_k=6, rerank=True, rerank_depth=3))
    assert reranked.reranker_version == "reverse@test"
    ids = [h.doc_id for h in reranked.hits]
    assert ids[:3] == [h.doc_id for h in plain[:3]][::-1]
    assert ids[3:] == [h.doc_id for h in plain[3:]]
    assert reranked.hits[0].rerank == 3.0 and reranked.hits[3].rerank is None


def test_load_round_trip_and_encoder_mismatch(tiny_index: SearchIndex, fake_encoder: FakeEncoder) -> None:
    loaded = SearchIndex.load(tiny_index.path)
    assert loaded.version == tiny_index.version
    request = SearchRequest("loyal dog barks", top_k=4)
    assert (
        Searcher(loaded, fake_encoder).search(request).hits == Searcher(tiny_index, fake_encoder).search(request).hits
    )
    with pytest.raises(IncompatibleArtifactError, match="built with encoder"):
        Searcher(loaded, FakeEncoder(["other", "words"]))


def test_corrupt_index_is_refused_with_a_clear_error(tiny_index: SearchIndex) -> None:
    path = tiny_index.path
    with open(path / "docs.jsonl", "a") as handle:
        handle.write(json.dumps({"_id": "intruder", "text": "x"}) + "\n")
    with pytest.raises(CorruptArtifactError, match=r"docs\.jsonl: checksum mismatch"):
        SearchIndex.load(path)
    (path / "manifest.json").unlink()
    with pytest.raises(Exception, match=r"no manifest\.json"):
        SearchIndex.load(path)


def test_snippet_cuts_at_a_word_boundary(tiny_index: SearchIndex) -> None:
    doc = tiny_index.document("dogs")
    short = snippet(doc, 30)
    assert short.endswith("…") and len(short) <= 31
    assert doc.text.startswith(short[:-1])
    assert snippet(doc, 1000) == doc.text


@given(st.text(alphabet=st.sampled_from(list("ab c\n\t,;:")), max_size=3000), st.integers(min_value=10, max_value=300))
def test_snippet_of_the_head_equals_the_snippet_of_the_whole_text(text: str, max_chars: int) -> None:
    from retrieval.types import Document

    whole = " ".join(text.split())
    if len(whole) <= max_chars:
        expected = whole
    else:
        cut = whole.rfind(" ", 0, max_chars)
        expected = whole[: cut if cut > max_chars // 2 else max_chars].rstrip(" ,;:") + "…"
    assert snippet(Document("d", "title", text), max_chars) == expected
