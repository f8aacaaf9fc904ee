from __future__ import annotations

import itertools

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from retrieval.bm25 import BM25Config, BM25Index
from retrieval.tokenization import Tokenizer, TokenizerConfig

CORPUS = [
    "The quick brown fox jumps over the lazy dog",
    "A fox hunts mice in snowy fields at dawn",
    "Dogs and cats are popular household pets",
    "Stock markets rallied as interest rates fell",
    "The central bank raised interest rates again",
    "Solar panels convert sunlight into electricity",
    "Wind turbines generate electricity from moving air",
    "Foxes are omnivorous mammals of the dog family",
]
IDS = [f"d{i}" for i in range(len(CORPUS))]


def test_tokenizer_lowercases_drops_stopwords_and_stems() -> None:
    tok = Tokenizer()
    assert tok.tokenize("The Foxes were RUNNING and jumping!") == ["fox", "were", "run", "jump"]
    assert Tokenizer(TokenizerConfig(stemmer=None, stopwords="none")).tokenize("The Foxes") == ["the", "foxes"]
    with pytest.raises(ValueError, match="unknown stopword list"):
        Tokenizer(TokenizerConfig(stopwords="klingon"))


def test_bm25_exact_ranks_on_a_handful_of_documents() -> None:
    index = BM25Index.build(CORPUS, IDS)
    assert [h.doc_id for h in index.search("interest rates", k=5)] == ["d3", "d4"]
    assert [h.doc_id for h in index.search("electricity from sunlight", k=5)] == ["d5", "d6"]
    foxes = index.search("fox", k=10)
    assert {h.doc_id for h in foxes} == {"d0", "d1", "d7"}
    # Shorter documents win on equal term frequency (b > 0): d1 (9 tokens) vs d0 (10).
    assert [h.doc_id for h in index.search("fox", k=2)] == [h.doc_id for h in foxes[:2]]
    assert all(a.score >= b.score for a, b in itertools.pairwise(foxes))
    assert index.search("zebra unicorn", k=5) == []


def test_bm25_save_load_round_trip(tmp_path) -> None:
    index = BM25Index.build(CORPUS, IDS, BM25Config(k1=1.1, b=0.6))
    index.save(tmp_path)
    loaded = BM25Index.load(tmp_path, IDS)
    assert loaded.config == BM25Config(k1=1.1, b=0.6)
    for query in ("fox dog", "interest rates bank", "electricity"):
        assert loaded.search(query, k=8) == index.search(query, k=8)


@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (0.9, 0.4), (1.2, 0.0)])
def test_bm25s_matches_rank_bm25_where_formulas_agree(k1: float, b: float) -> None:
    """bm25s ``robertson`` x (k1 + 1) == rank_bm25 ``BM25Okapi`` on the same tokens while every idf is positive.

    bm25s leaves out the constant (k1 + 1) numerator of the tf component (it changes no ranking).
    """
    tok = Tokenizer()
    corpus_tokens = tok.tokenize_many(CORPUS)
    ours = BM25Index.build(CORPUS, IDS, BM25Config(k1=k1, b=b, method="robertson"))
    reference = BM25Okapi(corpus_tokens, k1=k1, b=b)
    for query in ("fox dog", "interest rates", "electricity sunlight wind", "household pets mammals"):
        terms = tok.tokenize(query)
        # Every query term here occurs in fewer than half the documents: no idf floor involved.
        assert all(sum(t in doc for doc in corpus_tokens) < len(CORPUS) / 2 for t in terms)
        expected = reference.get_scores(terms)
        np.testing.assert_allclose(ours.scores(query) * (k1 + 1), expected, rtol=1e-5, atol=1e-6)
        ranked = [h.doc_id for h in ours.search(query, k=8)]
        assert ranked == [IDS[i] for i in np.argsort(-expected, kind="stable") if expected[i] > 0]


def test_idf_floor_is_where_bm25s_and_rank_bm25_differ() -> None:
    """A term in more than half the documents has a negative classic idf: bm25s clips it to 0,
    rank_bm25 replaces it by epsilon * mean idf."""
    corpus = ["apple pie", "apple tart", "apple juice", "cherry pie"]
    ids = ["a", "b", "c", "d"]
    tok = Tokenizer()
    ours = BM25Index.build(corpus, ids, BM25Config(method="robertson")).scores("apple")
    reference = BM25Okapi(tok.tokenize_many(corpus)).get_scores(tok.tokenize("apple"))
    assert (ours == 0).all()  # ln((4 - 3 + .5) / (3 + .5)) < 0, clipped to 0
    assert (reference[:3] > 0).all()  # epsilon * mean idf
    # Lucene's idf, our default, is never negative.
    assert (BM25Index.build(corpus, ids).scores("apple")[:3] > 0).all()
