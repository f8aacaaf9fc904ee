"""The linking throughput benchmark's process pool: every document linked once, by real linkers."""

from __future__ import annotations

from pathlib import Path

import pytest

from linking import EntityLinker, KnowledgeBase, MentionDetector, load_spacy, read_benchmark
from retrieval.onnx_encoder import load_encoder
from scripts import bench_linking
from tests.linking.conftest import ALIASES, ENTITIES

pytestmark = pytest.mark.integration


def test_two_processes_link_every_document_once(tmp_path: Path) -> None:
    kb = KnowledgeBase(ENTITIES, ALIASES)
    kb.save(tmp_path / "kb")
    texts = [d.text for d in read_benchmark(bench_linking.DATA / "aquaint.jsonl")[:5]]  # a training set
    linker = EntityLinker(kb, load_encoder(runtime="torch"), detector=MentionDetector(load_spacy()))
    expected = sum(len(links) for links in linker.link_batch(texts))
    assert expected > 0

    result = bench_linking.parallel_throughput(tmp_path / "kb", None, "torch", 2, texts)

    assert result["workers"] == 2 and result["documents"] == 5
    assert result["mentions_per_s"] * result["seconds"] == pytest.approx(expected)  # each text once, in some process
    assert result["docs_per_s"] == pytest.approx(5 / result["seconds"]) and result["seconds"] > 0


def test_speed_rows_give_the_stage_seconds_of_one_process_only() -> None:
    one = {"workers": 1, "docs_per_s": 4.0, "mentions_per_s": 150.0, "documents": 20, "seconds": 5.0}
    two = {"workers": 2, "docs_per_s": 7.5, "mentions_per_s": 281.0, "documents": 20, "seconds": 2.67}
    measured: dict[str, bench_linking.Measured] = {"onnx": ({}, {}, {"ner": 1.2, "encode": 2.5}, {1: one, 2: two})}
    header, _, first, second = bench_linking.speed_table(measured)
    assert "processes" in header
    assert first == "| onnx | 1 | 4.00 | 150.0 | 1.20 | 2.50 | 1.30 |"
    assert second == "| onnx | 2 | 7.50 | 281.0 | - | - | - |"
