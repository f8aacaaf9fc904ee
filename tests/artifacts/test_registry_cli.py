"""``sleuth index build --registry``, ``sleuth eval search --record`` and ``sleuth registry ...``, in-process.

The encoder is the fake one (patched in for the model loader), so the commands run in a blink.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifacts.registry import Registry
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher
from service.cli import main
from service.config import ServerConfig
from service.serving.loading import Services
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.service.conftest import running_server


@pytest.fixture
def fake_models(monkeypatch) -> None:
    import retrieval.dense

    monkeypatch.setattr(retrieval.dense, "SentenceTransformerEncoder", lambda *a, **k: FakeEncoder(TINY_KEYWORDS))
    # index build embeds with the ONNX runtime by default
    monkeypatch.setattr("retrieval.onnx_encoder.OnnxEncoder.load", lambda *a, **k: FakeEncoder(TINY_KEYWORDS))


@pytest.fixture
def eval_files(tmp_path: Path) -> tuple[Path, Path]:
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": "loyal dog"}\n{"_id": "q2", "text": "young kitten"}\n')
    qrels = tmp_path / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tdogs\t1\nq2\tkitten\t1\n")
    return queries, qrels


def test_build_evaluate_activate_rollback_gc_from_the_command_line(
    fake_models, tiny_corpus: Path, eval_files, tmp_path: Path, capsys
) -> None:
    root = tmp_path / "registry"
    build = ["index", "build", "--corpus", str(tiny_corpus), "--registry", str(root)]
    assert main([*build, "--activate"]) == 0
    assert main([*build, "--k1", "1.4"]) == 0
    assert main([*build, "--k1", "1.4"]) == 0  # identical: no third version
    registry = Registry(root)
    v1, v2 = (v.version for v in registry.versions())
    assert registry.pointer("search-index").version == v1
    capsys.readouterr()

    queries, qrels = eval_files
    assert main(["eval", "search", "--registry", str(root), "--queries", str(queries), "--qrels", str(qrels),
                 "--mode", "bm25", "--record"]) == 0  # fmt: skip
    recorded = registry.get(v1).manifest.metrics["test/bm25"]
    assert recorded["ndcg@10"] == pytest.approx(1.0) and recorded["queries"] == 2
    assert len(recorded["inputs"]["qrels"]) == 64

    capsys.readouterr()
    assert main(["registry", "list", "--registry", str(root)]) == 0
    listing = capsys.readouterr().out
    assert f"* {v1}" in listing and f"  {v2}" in listing and "test/bm25: ndcg@10=1.0000" in listing
    assert main(["registry", "show", v2.split("@")[1][:6], "--registry", str(root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["params"]["bm25"]["k1"] == 1.4 and shown["inputs"]["corpus"]["sha256"]
    assert shown["parents"]["encoder"] and shown["libraries"]["numpy"] and not shown["registry"]["active"]

    assert main(["registry", "activate", v2, "--registry", str(root)]) == 0
    assert registry.pointer("search-index").version == v2
    assert main(["registry", "rollback", "--registry", str(root)]) == 0
    assert registry.pointer("search-index").version == v1
    assert main(["registry", "rollback", "--registry", str(root)]) == 2
    assert "no earlier active search-index" in capsys.readouterr().err
    assert main(["registry", "activate", "search-index@000000", "--registry", str(root)]) == 2
    assert "no version" in capsys.readouterr().err

    assert main(["registry", "gc", "--keep", "0", "--registry", str(root)]) == 0
    assert f"deleted {v2}" in capsys.readouterr().out
    assert [v.version for v in registry.versions()] == [v1]


def test_activate_and_rollback_reach_a_running_server(tiny_corpus: Path, tmp_path: Path, capsys) -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    registry = Registry.open(tmp_path / "registry")
    from retrieval.bm25 import BM25Config

    v1, v2 = (
        registry.publish(
            "search-index", lambda out, k1=k1: SearchIndex.build(tiny_corpus, out, encoder, bm25_config=BM25Config(k1))
        ).info.version
        for k1 in (0.9, 1.3)
    )
    registry.activate(v1)
    services = Services(searcher=Searcher(SearchIndex.load(registry.get(v1).path), encoder))
    config = ServerConfig(host="127.0.0.1", port=0, threads=1, registry=registry.root, registry_poll_seconds=0)
    with running_server(services, config) as address:
        assert main(["registry", "activate", v2, "--target", address]) == 0
        assert f"{address} now serves {v2} (was {v1}" in capsys.readouterr().out
        assert main(["registry", "status", "--target", address]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["served"][0]["version"] == v2 and status["registry_active"]["search-index"] == v2
        assert main(["registry", "rollback", "--target", address]) == 0
        assert f"rolled back to {v1}" in capsys.readouterr().out
        assert main(["registry", "activate", "ffff", "--target", address]) == 2
        assert "NOT_FOUND" in capsys.readouterr().err
    assert registry.pointer("search-index").version == v1
