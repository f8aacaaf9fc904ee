from __future__ import annotations

import json

from retrieval.corpus import load_qrels, load_queries
from service.cli import main
from service.cli.online import parse_drift_metrics
from service.mlops.feedback import FeedbackEvent, FeedbackLog


def _log(tmp_path) -> str:
    log = FeedbackLog(tmp_path / "f.db")
    events = []
    for i in range(12):
        arm = "candidate" if i % 3 == 0 else "control"
        events += [FeedbackEvent("impression", f"r{i}", f"s{i}", arm, "feline care", f"d{p}", p) for p in (1, 2, 3)]
        if i % 2 == 0:
            events.append(FeedbackEvent("click", f"r{i}", f"s{i}", arm, doc_id="d2", position=2, dwell_ms=45_000))
    log.record(events)
    log.close()
    return str(tmp_path / "f.db")


def test_report_online_json(tmp_path, capsys) -> None:
    db = _log(tmp_path)
    assert main(["report", "online", "--feedback-db", db, "--json"]) == 0
    arms = {a["arm"]: a for a in json.loads(capsys.readouterr().out)["arms"]}
    assert arms["candidate"]["searches"] == 4 and arms["control"]["searches"] == 8
    assert arms["control"]["ctr"]["value"] == 0.5
    low, high = arms["control"]["ctr"]["ci95"]
    assert low < 0.5 < high
    assert main(["report", "online", "--feedback-db", db]) == 0
    assert "Wilson" in capsys.readouterr().out


def test_export_clicks_writes_trainable_qrels(tmp_path, capsys) -> None:
    db = _log(tmp_path)
    assert main(["export", "clicks", "--feedback-db", db, "--out", str(tmp_path / "out")]) == 0
    qrels = load_qrels(tmp_path / "out" / "qrels.tsv")
    (query,) = load_queries(tmp_path / "out" / "queries.jsonl")
    assert query.text == "feline care"
    # d2: clicked in 6 of 12 searches at position 2 -> weighted CTR 1.0 -> relevance 2.
    assert qrels[query.qid] == {"d1": 0, "d2": 2, "d3": 0}


def test_missing_database_is_a_clear_error(tmp_path, capsys) -> None:
    assert main(["report", "online", "--feedback-db", str(tmp_path / "none.db")]) == 2
    assert "no feedback database" in capsys.readouterr().err


def test_drift_gauges_are_parsed_from_prometheus_text() -> None:
    text = (
        "# HELP sleuth_drift_psi x\n# TYPE sleuth_drift_psi gauge\n"
        'sleuth_drift_psi{feature="query_length"} 0.31\nsleuth_drift_psi{feature="top_dense"} 0.02\n'
        'sleuth_drift_alert{feature="query_length"} 1.0\n'
    )
    assert parse_drift_metrics(text) == {"query_length": {"psi": 0.31, "alert": 1.0}, "top_dense": {"psi": 0.02}}
