from __future__ import annotations

import json

from retrieval.evaluation import write_trec_run
from service.cli import main


def test_eval_compare_search_runs_writes_json_html_and_png(tmp_path, capsys) -> None:
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("".join(f"q{i}\td{i}\t1\n" for i in range(20)))
    base = {f"q{i}": {f"d{i}": 1.0 if i % 2 else 0.1, "junk": 0.5} for i in range(20)}
    better = {f"q{i}": {f"d{i}": 1.0, "junk": 0.5} for i in range(20)}
    write_trec_run(tmp_path / "a.trec", base)
    write_trec_run(tmp_path / "b.trec", better)
    argv = [
        "eval",
        "compare",
        str(tmp_path / "a.trec"),
        str(tmp_path / "b.trec"),
        "--qrels",
        str(qrels),
        "--metrics",
        "mrr@10,ndcg@10",
        "--json",
        "--html",
        str(tmp_path / "r.html"),
        "--png",
        str(tmp_path / "r.png"),
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    mrr = out["metrics"][0]
    assert mrr["metric"] == "mrr@10" and mrr["units"] == 20
    assert mrr["difference"] == 0.25  # ten queries go from rank 2 (0.5) to rank 1
    assert mrr["p_value"] < 0.01 and mrr["ci95_low"] > 0
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "r-ndcg_at_10.png").exists()


def test_eval_compare_linking_counts_and_errors(tmp_path, capsys) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"id": f"d{i}", "tp": 2, "fp": 1, "fn": 1}) + "\n" for i in range(10)))
    b.write_text(a.read_text())
    assert main(["eval", "compare", str(a), str(b), "--json"]) == 0
    f1 = json.loads(capsys.readouterr().out)["metrics"][0]
    assert (f1["metric"], f1["difference"], f1["p_value"]) == ("f1", 0.0, 1.0)

    (tmp_path / "bad.jsonl").write_text('{"id": "d1", "tp": 1}\n')
    assert main(["eval", "compare", str(tmp_path / "bad.jsonl"), str(b)]) == 2
    assert "bad.jsonl:1: expected" in capsys.readouterr().err
    write_trec_run(tmp_path / "x.trec", {"q": {"d": 1.0}})
    assert main(["eval", "compare", str(tmp_path / "x.trec"), str(tmp_path / "x.trec")]) == 2
    assert "needs --qrels" in capsys.readouterr().err
