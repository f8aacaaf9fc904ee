"""Quality floors on real collections (SciFact, CISI) with the real encoder: integration tests."""

from __future__ import annotations

import pytest

from retrieval.corpus import load_qrels, load_queries
from retrieval.evaluation import evaluate_run
from retrieval.pipeline import Searcher, SearchRequest

pytestmark = pytest.mark.integration


def ndcg10(searcher: Searcher, data_dir, mode: str) -> float:
    qrels = load_qrels(data_dir / "qrels" / "test.tsv")
    queries = [q for q in load_queries(data_dir / "queries.jsonl") if q.qid in qrels]
    results = searcher.batch_search([SearchRequest(q.text, top_k=100, mode=mode) for q in queries])
    run = {q.qid: {h.doc_id: h.score for h in r.hits} for q, r in zip(queries, results, strict=True)}
    return evaluate_run(run, qrels, ["ndcg@10"]).means["ndcg@10"]


@pytest.fixture(scope="module")
def scifact_scores(scifact_index, real_encoder, scifact_dir) -> dict[str, float]:
    searcher = Searcher(scifact_index, real_encoder)
    return {mode: ndcg10(searcher, scifact_dir, mode) for mode in ("bm25", "dense", "hybrid")}


def test_scifact_bm25_floor(scifact_scores) -> None:
    assert scifact_scores["bm25"] >= 0.67


def test_scifact_dense_floor(scifact_scores) -> None:
    assert scifact_scores["dense"] >= 0.64


def test_scifact_hybrid_floor_and_gain_over_both(scifact_scores) -> None:
    assert scifact_scores["hybrid"] >= 0.71
    assert scifact_scores["hybrid"] > max(scifact_scores["bm25"], scifact_scores["dense"])


def test_cisi_hybrid_at_least_the_better_retriever(cisi_index, real_encoder, cisi_dir) -> None:
    searcher = Searcher(cisi_index, real_encoder)
    scores = {mode: ndcg10(searcher, cisi_dir, mode) for mode in ("bm25", "dense", "hybrid")}
    assert scores["hybrid"] >= max(scores["bm25"], scores["dense"]), scores
