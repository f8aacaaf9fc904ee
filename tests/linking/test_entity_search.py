"""Nearest-entity search: exact for small KBs and training, an HNSW graph (cached on disk) for large KBs.

The vectors are random unit vectors: the test is of the search structure, not of an encoder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import linking.entity_index as entity_index_module
from linking import (
    DisambiguatorConfig,
    EntityIndex,
    EntityLinker,
    EntitySearch,
    KnowledgeBase,
    LinkerConfig,
    LinkerTrainingConfig,
    MentionDetector,
    train_linker,
)
from linking.entity_index import EXACT
from tests.linking.test_training import TRAIN


def unit_vectors(rows: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def index_of(vectors: np.ndarray, search: EntitySearch, cache: Path) -> EntityIndex:
    return EntityIndex([f"Q{i}" for i in range(len(vectors))], vectors, search, cache_dir=cache)


def test_small_kbs_are_searched_exactly_and_large_ones_through_the_graph(tmp_path: Path) -> None:
    vectors = unit_vectors(3000)
    queries = unit_vectors(40, seed=1)
    exact = index_of(vectors, EntitySearch(approximate_from=3001), tmp_path)
    graph = index_of(vectors, EntitySearch(approximate_from=3000), tmp_path)
    assert not exact.approximate and graph.approximate
    expected = exact.nearest(queries, 5)
    assert not list(tmp_path.iterdir())  # exact search builds no graph
    found = graph.nearest(queries, 5)
    agree = np.mean([len({e for e, _ in a} & {e for e, _ in b}) / 5 for a, b in zip(expected, found, strict=True)])
    assert agree >= 0.95
    for query, hits in zip(queries, found, strict=True):  # best first, and the scores are the cosines
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True) and len(hits) == 5
        entity, score = hits[0]
        assert score == pytest.approx(float(vectors[int(entity[1:])] @ query), abs=1e-5)
    assert len(list(tmp_path.glob("*.faiss"))) == 1


def test_the_graph_is_read_from_the_cache_and_a_damaged_entry_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    vectors, queries = unit_vectors(500), unit_vectors(10, seed=1)
    search = EntitySearch(approximate_from=0)
    first = index_of(vectors, search, tmp_path).nearest(queries, 3)
    (entry,) = tmp_path.glob("*.faiss")
    built = []
    real = entity_index_module.faiss.IndexHNSWFlat
    monkeypatch.setattr(entity_index_module.faiss, "IndexHNSWFlat", lambda *a: built.append(a) or real(*a))
    assert index_of(vectors, search, tmp_path).nearest(queries, 3) == first
    assert built == []  # read, not built
    entry.write_bytes(b"not a faiss index")
    with caplog.at_level(logging.WARNING, logger="linking.entity_index"):
        assert index_of(vectors, search, tmp_path).nearest(queries, 3) == first  # the same graph, built again
    assert len(built) == 1 and "unreadable entity graph cache" in caplog.text
    other = unit_vectors(500, seed=2)  # other vectors are another entry
    index_of(other, search, tmp_path).nearest(queries, 3)
    assert len(list(tmp_path.glob("*.faiss"))) == 2


def test_with_search_shares_the_vectors_and_exact_ignores_the_graph(tmp_path: Path) -> None:
    vectors, queries = unit_vectors(800), unit_vectors(10, seed=1)
    graph = index_of(vectors, EntitySearch(approximate_from=0), tmp_path)
    exact = graph.with_search(EXACT)
    assert exact.vectors is graph.vectors and not exact.approximate
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :4]
    assert [[e for e, _ in hits] for hits in exact.nearest(queries, 4)] == [[f"Q{i}" for i in row] for row in expected]
    assert not list(tmp_path.glob("*.faiss"))


def test_training_searches_exactly_and_the_trained_linker_keeps_the_callers_search(
    kb_files: tuple[Path, Path], linking_encoder, nlp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = KnowledgeBase.from_files([kb_files[0]], [kb_files[1]])
    config = LinkerConfig(entity_search=EntitySearch(approximate_from=0))  # every KB "large"
    linker = EntityLinker(kb, linking_encoder, detector=MentionDetector(nlp), config=config)

    def no_graph(*args: object) -> None:
        raise AssertionError("training built an HNSW graph")

    monkeypatch.setattr(entity_index_module, "_load_or_build_graph", no_graph)
    training = LinkerTrainingConfig(DisambiguatorConfig(model_type="logistic"), folds=2)
    trained = train_linker(linker, {"tiny": TRAIN}, training)
    assert trained.linker.config.entity_search == config.entity_search
    assert linker.entity_index.approximate and trained.linker.entity_index.vectors is linker.entity_index.vectors
