"""``sleuth index build --shards N``: the local commands answer from a sharded index as from one index.

The encoder is the keyword fake (tests/conftest.py), put in place of the model loader, so these
tests run in seconds; the real encoder's sharded build is checked on SciFact by hand (README).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.evaluation import read_trec_run
from service.cli import main
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.retrieval.test_sharding import QUERIES, medium_docs


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch) -> FakeEncoder:
    encoder = FakeEncoder(TINY_KEYWORDS)
    monkeypatch.setattr("retrieval.onnx_encoder.OnnxEncoder.load", lambda *args, **kwargs: encoder)
    monkeypatch.setattr("retrieval.dense.SentenceTransformerEncoder", lambda *args, **kwargs: encoder)
    return encoder


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in medium_docs()), encoding="utf-8")
    return path


def _build(corpus: Path, out: Path, *extra: str) -> int:
    return main(["index", "build", "--corpus", str(corpus), "--out", str(out), "--no-cache", *extra])


def _hits(index: Path, query: str, mode: str, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    assert main(["search", "--index", str(index), query, "--mode", mode, "-k", "20", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["hits"]


def test_sharded_cli_search_and_eval_equal_unsharded(
    fake_models: FakeEncoder, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _build(corpus, tmp_path / "one") == 0
    assert _build(corpus, tmp_path / "three", "--shards", "3") == 0
    assert "42 documents, 3 shards" in capsys.readouterr().out
    for mode in ("bm25", "dense", "hybrid"):
        for query in QUERIES:
            expected = _hits(tmp_path / "one", query, mode, capsys)
            got = _hits(tmp_path / "three", query, mode, capsys)
            assert [h["doc_id"] for h in got] == [h["doc_id"] for h in expected] != []
            assert [h["score"] for h in got] == pytest.approx([h["score"] for h in expected], abs=1e-6)
            assert [h["snippet"] for h in got] == [h["snippet"] for h in expected]

    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": str(i), "text": q}) + "\n" for i, q in enumerate(QUERIES))
    )
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n0\td03\t1\n1\td11\t1\n2\td20\t1\n")
    runs = {}
    for name in ("one", "three"):
        argv = ["eval", "search", "--index", str(tmp_path / name), "--queries", str(tmp_path / "queries.jsonl")]
        argv += ["--qrels", str(tmp_path / "qrels.tsv"), "--mode", "hybrid", "--json"]
        assert main([*argv, "--run-out", str(tmp_path / f"{name}.trec")]) == 0
        metrics = json.loads(capsys.readouterr().out)
        runs[name] = (metrics, read_trec_run(tmp_path / f"{name}.trec"))
    assert runs["three"][0] == runs["one"][0]
    one, three = runs["one"][1], runs["three"][1]
    assert one.keys() == three.keys() and all(one[q] for q in one)
    for qid in one:
        assert list(three[qid]) == list(one[qid])
        assert list(three[qid].values()) == pytest.approx(list(one[qid].values()), abs=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shards", "0"], "argument --shards: must be at least 1, got 0"),
        (["--shards", "43"], "shards: 43 shards for a corpus of 42 documents"),
        (
            ["--shards", "3", "--faiss", "ivfpq", "--ivf-nlist", "4", "--pq-m", "5", "--pq-nbits", "4"],
            "ivfpq cannot train on the smallest of 3 shards: 14 vectors, it needs at least 16",
        ),
    ],
)
def test_bad_builds_are_one_line_errors_and_publish_nothing(
    fake_models: FakeEncoder,
    corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert _build(corpus, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert fake_models.calls == []  # refused before any embedding


def test_a_corrupt_shard_is_a_one_line_error(
    fake_models: FakeEncoder, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _build(corpus, tmp_path / "three", "--shards", "3") == 0
    docs = tmp_path / "three" / "shard-002" / "docs.jsonl"
    docs.write_text(docs.read_text() + "\n")
    capsys.readouterr()
    assert main(["search", "--index", str(tmp_path / "three"), "cat", "--json"]) == 2
    err = capsys.readouterr().err
    assert "shard shard-002: shard-002/docs.jsonl: checksum mismatch" in err and "Traceback" not in err


def test_a_server_over_a_sharded_index_answers_as_over_one_index(
    fake_models: FakeEncoder, corpus: Path, tmp_path: Path
) -> None:
    from retrieval.index import SearchIndex
    from retrieval.pipeline import Searcher
    from service.client import SleuthClient
    from service.serving.loading import Services
    from tests.service.conftest import running_server

    assert _build(corpus, tmp_path / "one") == 0
    assert _build(corpus, tmp_path / "three", "--shards", "3") == 0
    answers = {}
    for name in ("one", "three"):
        index = SearchIndex.load(tmp_path / name)
        with (
            running_server(Services(searcher=Searcher(index, fake_models))) as address,
            SleuthClient(address) as client,
        ):
            answers[name] = [
                [(h.doc_id, h.score, h.snippet) for h in client.search(q, top_k=10, mode=mode).hits]
                for q in QUERIES
                for mode in ("bm25", "dense", "hybrid")
            ]
    assert answers["three"] == answers["one"]
    assert sum(len(hits) for hits in answers["one"]) > 100


def test_a_sharded_build_publishes_into_the_registry(
    fake_models: FakeEncoder, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    argv = ["index", "build", "--corpus", str(corpus), "--no-cache", "--shards", "2"]
    assert main([*argv, "--registry", str(registry), "--activate"]) == 0
    capsys.readouterr()
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "wild wolf packs"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\td20\t1\n")
    argv = ["eval", "search", "--registry", str(registry), "--queries", str(tmp_path / "queries.jsonl")]
    assert main([*argv, "--qrels", str(tmp_path / "qrels.tsv"), "--mode", "bm25", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 1
