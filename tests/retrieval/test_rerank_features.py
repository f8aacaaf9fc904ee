"""Reranker features on the tiny corpus with the fake keyword encoder: exact values, invariances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.errors import InvalidRequestError
from retrieval.pipeline import Searcher, SearchRequest
from retrieval.rerank_features import (
    FEATURE_GROUPS,
    FEATURE_NAMES,
    MONOTONE,
    RELATIVE_GROUPS,
    _ranks,
    candidate_features,
    features_of_groups,
)
from retrieval.types import ScoredHit


def column(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, FEATURE_NAMES.index(name)]


@pytest.fixture
def candidates(tiny_index, fake_encoder):
    searcher = Searcher(tiny_index, fake_encoder)
    query = "cat and kitten care"
    vector = fake_encoder.encode([query])[0]
    hits = searcher.run(SearchRequest(query, top_k=6), vector).hits
    return query, list(hits), vector


def test_shape_and_finite(tiny_index, candidates) -> None:
    query, hits, vector = candidates
    features = candidate_features(query, hits, tiny_index, vector)
    assert features.shape == (len(hits), len(FEATURE_NAMES))
    assert features.dtype == np.float32
    assert np.isfinite(features).all()


def test_bm25_contributions_sum_to_the_index_scores(tiny_index) -> None:
    bm25 = tiny_index.bm25
    query = "cat kitten dogs"
    term_ids = np.unique(bm25.query_term_ids(query))
    positions = np.arange(len(tiny_index))
    contributions = bm25.term_contributions(term_ids, positions)
    assert contributions.shape == (len(term_ids), len(tiny_index))
    np.testing.assert_allclose(contributions.sum(axis=0), bm25.scores(query), rtol=1e-5, atol=1e-6)
    assert (bm25.document_frequencies(term_ids) == (contributions > 0).sum(axis=1)).all()


def test_dense_and_bm25_features_are_exact(tiny_index, candidates) -> None:
    query, hits, vector = candidates
    features = candidate_features(query, hits, tiny_index, vector)
    positions = np.array([tiny_index.position(h.doc_id) for h in hits])
    cosine = tiny_index.dense.vectors(positions) @ vector
    np.testing.assert_allclose(column(features, "dense_cos"), cosine, rtol=1e-5)
    np.testing.assert_allclose(column(features, "dense_gap"), cosine - cosine.max(), atol=1e-6)
    bm25 = tiny_index.bm25.scores(query)[positions]
    np.testing.assert_allclose(column(features, "bm25_share"), bm25 / bm25.max(), rtol=1e-5)
    best = int(np.argmax(bm25))
    assert column(features, "bm25_log_rank")[best] == 0.0
    np.testing.assert_allclose(column(features, "fused_log_rank"), np.log([h.rank for h in hits]))


def test_term_coverage(tiny_index, fake_encoder) -> None:
    # "kitten" is both in the title and text of one document; "house" only in the dogs text.
    hits = [ScoredHit(doc_id, 1.0, rank) for rank, doc_id in enumerate(["kitten", "dogs", "fish"], start=1)]
    query = "kitten house"
    features = candidate_features(query, hits, tiny_index, fake_encoder.encode([query])[0])
    coverage = column(features, "coverage_idf")
    assert coverage[2] == 0.0  # fish has neither term
    assert 0.0 < coverage[0] < 1.0 and 0.0 < coverage[1] < 1.0
    assert column(features, "coverage_share").max() == pytest.approx(1.0)
    title = column(features, "title_coverage_idf")
    assert title[0] > 0.0 and title[1] == 0.0 and title[2] == 0.0


def test_candidate_order_does_not_change_a_candidates_features(tiny_index, candidates) -> None:
    query, hits, vector = candidates
    features = candidate_features(query, hits, tiny_index, vector)
    shuffled = [hits[i] for i in (3, 0, 5, 1, 4, 2)]  # same ScoredHits (and fused ranks), new order
    again = candidate_features(query, shuffled, tiny_index, vector)
    np.testing.assert_allclose(again, features[[3, 0, 5, 1, 4, 2]], rtol=1e-5, atol=1e-6)


def test_needs_a_query_vector_and_handles_no_candidates(tiny_index, candidates) -> None:
    query, hits, vector = candidates
    with pytest.raises(InvalidRequestError) as info:
        candidate_features(query, hits, tiny_index, None)
    assert info.value.field == "mode"
    assert candidate_features(query, [], tiny_index, vector).shape == (0, len(FEATURE_NAMES))


def test_query_without_known_terms_gets_zero_lexical_features(tiny_index, candidates, fake_encoder) -> None:
    _, hits, _ = candidates
    features = candidate_features("zzzz qqqq", hits, tiny_index, fake_encoder.encode(["zzzz"])[0])
    for name in ("bm25_share", "bm25_z", "coverage_idf", "coverage_share", "coverage_z"):
        assert (column(features, name) == 0).all(), name


def test_groups_cover_every_feature_once_and_monotone_directions() -> None:
    listed = [name for names in FEATURE_GROUPS.values() for name in names]
    assert sorted(listed) == sorted(FEATURE_NAMES) and len(set(listed)) == len(listed)
    assert set(MONOTONE) <= set(FEATURE_NAMES)
    relative = features_of_groups(RELATIVE_GROUPS)
    assert not set(relative) & set(FEATURE_GROUPS["absolute"])
    with pytest.raises(ValueError, match="unknown feature group"):
        features_of_groups(["nope"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=-5, max_value=5), min_size=1, max_size=30))
def test_ranks_are_descending_with_shared_best_rank_for_ties(values: list[int]) -> None:
    array = np.array(values, dtype=np.float64)
    ranks = _ranks(array)
    for i, v in enumerate(array):
        assert ranks[i] == 1 + np.sum(array > v)
