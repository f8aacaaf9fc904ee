"""``index build``, ``search`` and ``eval search`` on the tiny corpus with the fake encoder (no model loaded).

The commands load their encoder through ``retrieval.load_encoder``; here it hands out the tests'
keyword encoder, so the commands run end to end in a second.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import retrieval
from retrieval.errors import InvalidRequestError
from service.cli import main
from service.client import SleuthClient
from tests.conftest import TINY_DOCS, TINY_KEYWORDS, FakeEncoder


@pytest.fixture
def keyword_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """``retrieval.load_encoder`` returns the keyword encoder the tiny index was built with."""
    monkeypatch.setattr(retrieval, "load_encoder", lambda *args, **kwargs: FakeEncoder(TINY_KEYWORDS))


def write_corpus(path: Path, docs: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(doc) + "\n" for doc in docs), encoding="utf-8")
    return path


def test_eval_search_warns_about_judged_queries_missing_from_the_queries_file(
    tiny_index, tmp_path: Path, keyword_encoder: None, capsys
) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "1", "text": "young cat"}\n', encoding="utf-8")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\tkitten\t1\n2\tbirds\t1\n3\tdogs\t1\n", encoding="utf-8")
    argv = ["eval", "search", "--index", str(tiny_index.path), "--queries", str(queries), "--qrels", str(qrels)]
    assert main([*argv, "--mode", "bm25", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["missing_queries"] == 2 and report["queries"] == 3
    # the two missing queries score 0 and still count in the means (trec_eval -c)
    assert 0 < report["mrr@10"] <= 1 / 3
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "2 of 3 judged queries" in warning[0] and "2, 3" in warning[0]

    assert main([*argv, "--mode", "bm25"]) == 0
    assert "2 missing (scored 0)" in capsys.readouterr().out

    queries.write_text('{"_id": "1", "text": "young cat"}\n{"_id": "2", "text": "fly"}\n{"_id": "3", "text": "x"}\n')
    assert main([*argv, "--mode", "bm25", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["missing_queries"] == 0 and "warning" not in captured.err


def test_index_build_counts_empty_documents_and_strict_refuses_them(
    tmp_path: Path, keyword_encoder: None, capsys, caplog
) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", [*TINY_DOCS, {"_id": "blank", "title": "", "text": " "}])
    out = tmp_path / "index"
    with caplog.at_level(logging.WARNING):
        assert main(["index", "build", "--corpus", str(corpus), "--out", str(out), "--no-cache"]) == 0
    assert "7 documents (1 empty: indexed, never retrieved)" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["stats"]["empty_documents"] == 1
    assert any("'blank' (line 7)" in record.getMessage() for record in caplog.records)

    strict = tmp_path / "strict"
    assert main(["index", "build", "--corpus", str(corpus), "--out", str(strict), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "corpus.jsonl:7" in err and "'blank'" in err and "Traceback" not in err
    assert not strict.exists()


def test_top_k_means_the_same_locally_and_through_a_server(
    tiny_index, tiny_server: str, keyword_encoder: None, capsys
) -> None:
    hits = {}
    for where in (["--index", str(tiny_index.path)], ["--target", tiny_server]):
        assert main(["search", *where, "a cat or a dog", "-k", "3", "--mode", "bm25", "--json"]) == 0
        hits[where[0]] = [hit["doc_id"] for hit in json.loads(capsys.readouterr().out)["hits"]]
        assert main(["search", *where, "a cat or a dog", "-k", "0"]) == 2
        assert "within [1, 1000], got 0" in capsys.readouterr().err
    assert len(hits["--index"]) == 3 and hits["--index"] == hits["--target"]
    with SleuthClient(tiny_server) as client:
        with pytest.raises(InvalidRequestError, match="top_k"):
            client.search("a cat", top_k=0)
        assert len(client.search("a cat or a dog", top_k=2, mode="bm25").hits) == 2
