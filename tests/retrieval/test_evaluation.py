from __future__ import annotations

import random

import pytest
import pytrec_eval

from retrieval.corpus import load_qrels
from retrieval.evaluation import evaluate_run, ranked_doc_ids, read_trec_run, write_trec_run

# Our metric -> pytrec_eval measure (on the same run, or the run cut at 10 for recip_rank).
EQUIVALENT = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "map@100": "map_cut_100"}


def _random_run(qrels: dict[str, dict[str, int]], seed: int) -> dict[str, dict[str, float]]:
    """A noisy run over judged and unjudged documents, with deliberate score ties."""
    rng = random.Random(seed)
    pool = sorted({doc for judged in qrels.values() for doc in judged})
    run = {}
    for qid, judged in qrels.items():
        candidates = set(rng.sample(pool, 120)) | {d for d in judged if rng.random() < 0.7}
        run[qid] = {doc: round(rng.random() * 3 + (judged.get(doc, 0) * rng.random()), 1) for doc in candidates}
    return run


def _pytrec(run: dict, qrels: dict) -> tuple[dict, dict]:
    full = pytrec_eval.RelevanceEvaluator(qrels, set(EQUIVALENT.values())).evaluate(run)
    cut = {qid: {doc: s for doc, s in docs.items() if doc in ranked_doc_ids(docs)[:10]} for qid, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    return full, rr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_pytrec_eval_on_real_qrels_with_ties(scifact_dir, seed: int) -> None:
    qrels = load_qrels(scifact_dir / "qrels" / "train.tsv")
    run = _random_run(qrels, seed)
    assert any(len(set(docs.values())) < len(docs) for docs in run.values())  # ties are exercised
    ours = evaluate_run(run, qrels)
    full, rr = _pytrec(run, qrels)
    assert set(ours.per_query) == set(full)
    for qid, values in ours.per_query.items():
        for metric, measure in EQUIVALENT.items():
            assert values[metric] == pytest.approx(full[qid][measure], abs=1e-6), (qid, metric)
        assert values["mrr@10"] == pytest.approx(rr[qid]["recip_rank"], abs=1e-6), qid


def test_graded_relevance_ndcg_equals_pytrec_eval() -> None:
    qrels = {"q1": {"a": 2, "b": 1, "c": 0, "d": 1}, "q2": {"x": 1}}
    run = {"q1": {"c": 3.0, "b": 2.0, "a": 2.0, "e": 1.0, "d": 0.5}, "q2": {"y": 1.0, "x": 0.5}}
    ours = evaluate_run(run, qrels)
    full, _ = _pytrec(run, qrels)
    for qid in qrels:
        assert ours.per_query[qid]["ndcg@10"] == pytest.approx(full[qid]["ndcg_cut_10"], abs=1e-9)
    assert ours.per_query["q2"]["mrr@10"] == 0.5


def test_unanswered_judged_queries_count_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    report = evaluate_run({"q1": {"a": 1.0}}, qrels)
    assert report.queries == 2  # q3 has no relevant document
    assert report.means["ndcg@10"] == pytest.approx(0.5)
    assert report.to_dict()["queries"] == 2


def test_trec_run_file_round_trip(tmp_path) -> None:
    run = {"1": {"d1": 0.5, "d2": 1.25}, "2": {"d9": 3.0}}
    path = tmp_path / "run.trec"
    write_trec_run(path, run, tag="t")
    lines = path.read_text().splitlines()
    assert lines[0] == "1 Q0 d2 1 1.250000 t"
    assert read_trec_run(path) == run


def test_unknown_metric_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_run({}, {"q": {"a": 1}}, ["bleu@4"])
