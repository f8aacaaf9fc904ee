"""The KB-scale benchmark on a small generated KB: real build, load and candidate generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linking.kb import KnowledgeBase
from scripts import bench_kb_scale


def test_generated_kb_is_a_valid_kb(tmp_path: Path) -> None:
    words = ["Alba", "Berwick", "Corrie", "Dunmore", "Eske", "Farrow", "Glen", "Hollis"]
    entities, aliases = bench_kb_scale.write_synthetic_kb(200, tmp_path, seed=1, name_words=words)
    kb = KnowledgeBase.from_files([entities], [aliases])
    assert len(kb) == 200  # repeated names get distinct ids
    first = kb.entities()[0]
    assert kb.alias_lookup(first.name)  # every entity's name is one of its aliases


def test_measures_a_generated_kb(tmp_path: Path) -> None:
    out = tmp_path / "kb.jsonl"
    assert (
        bench_kb_scale.main(["--synthetic", "500", "--mentions", "20", "--workdir", str(tmp_path), "--out", str(out)])
        == 0
    )
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["kb"] == "synthetic-500" and row["entities"] == 500 and row["alias_strings"] > 500
    assert row["names_with_candidates"] == 1.0
    assert row["build_s"] > 0 and row["load_s"] > 0 and row["disk_bytes"] > 0
    assert row["build_cpu_s"] > 0 and row["load_cpu_s"] > 0 and row["names_cpu_ms"] > 0
    assert row["misspelled_p50_ms"] > 0 and row["names_p99_ms"] >= row["names_p50_ms"]


def test_nothing_to_measure_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        bench_kb_scale.main([])
    assert raised.value.code == 2
    assert "nothing to measure" in capsys.readouterr().err
