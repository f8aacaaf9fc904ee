"""Regression guards for ranking quality: BM25, dense and hybrid on SciFact *train* (the subset of
tests/conftest.py's ``scifact_train_dir``, all 809 judged train queries) with the real encoder's
weights (ONNX runtime). Integration tests.

These are guards, not the project's quality floors: the floors are stated on SciFact test, a
report set, and are measured by ``sleuth eval search`` for docs/benchmarks.md, never here. The
subset keeps about a third of SciFact's distractors, so its scores are higher than the full
corpus's and are comparable only with themselves; each guard sits about 0.01 under the value
measured on it (a drop of 0.01 NDCG@10 over 809 queries is several queries' worth of change).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.corpus import load_qrels, load_queries
from retrieval.evaluation import evaluate_run
from retrieval.pipeline import Searcher, SearchRequest

pytestmark = pytest.mark.integration


def ndcg10(searcher: Searcher, data_dir: Path, mode: str, qrels_name: str = "train") -> float:
    """Mean NDCG@10 over the queries judged in ``qrels/<qrels_name>.tsv``, top 100 retrieved in ``mode``."""
    qrels = load_qrels(data_dir / "qrels" / f"{qrels_name}.tsv")
    queries = [q for q in load_queries(data_dir / "queries.jsonl") if q.qid in qrels]
    results = searcher.batch_search([SearchRequest(q.text, top_k=100, mode=mode) for q in queries])
    run = {q.qid: {h.doc_id: h.score for h in r.hits} for q, r in zip(queries, results, strict=True)}
    return evaluate_run(run, qrels, ["ndcg@10"]).means["ndcg@10"]


@pytest.fixture(scope="module")
def train_scores(scifact_index, onnx_encoder, scifact_train_dir: Path) -> dict[str, float]:
    searcher = Searcher(scifact_index, onnx_encoder)
    return {mode: ndcg10(searcher, scifact_train_dir, mode) for mode in ("bm25", "dense", "hybrid")}


def test_guard_bm25_on_scifact_train_subset(train_scores, record_property) -> None:
    """Guards tokenization and BM25 scoring (k1, b, the analyser): measured 0.780 on the subset."""
    record_property("ndcg@10", train_scores)  # the measured values, for --junitxml
    assert train_scores["bm25"] >= 0.77, train_scores


def test_guard_dense_on_scifact_train_subset(train_scores) -> None:
    """Guards the document texts given to the encoder, normalization and the FAISS search: measured 0.774."""
    assert train_scores["dense"] >= 0.76, train_scores


def test_guard_hybrid_on_scifact_train_subset_beats_both_retrievers(train_scores) -> None:
    """Guards reciprocal-rank fusion: measured 0.814, above BM25 and dense alone (as on the full corpus)."""
    assert train_scores["hybrid"] >= 0.80, train_scores
    assert train_scores["hybrid"] > max(train_scores["bm25"], train_scores["dense"]), train_scores
