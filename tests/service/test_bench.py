"""``sleuth bench``: a closed-loop load from a separate process against a real server."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.bench import BenchConfig, BenchError, percentile, read_texts

REPO = Path(__file__).resolve().parents[2]


def test_bench_reports_throughput_percentiles_and_errors_by_code(tiny_server: str, tmp_path: Path) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "1", "text": "loyal dog"}\n{"_id": "2", "text": "kitten"}\n', encoding="utf-8")
    base = [sys.executable, "-m", "service.cli", "--log-level", "WARNING", "bench", "--target", tiny_server]
    common = ["--concurrency", "3", "--duration", "1.5", "--warmup", "0.5", "--queries", str(queries), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ok = subprocess.run(
        [*base, "--mode", "bm25", *common], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] > 0 and report["errors"] == {}
    assert report["throughput"] == pytest.approx(report["ok"] / 1.5)
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"] <= report["max_ms"]
    # Open loop: a fixed offered rate, whatever the answers.
    opened = subprocess.run(
        [*base, "--mode", "hybrid", "--rate", "40", *common],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert opened.returncode == 0, opened.stderr
    report = json.loads(opened.stdout)
    assert report["offered_rate"] == 40.0 and report["errors"] == {}
    assert 30 <= report["ok"] <= 62  # 1.5 s at 40/s = 60 scheduled, give or take the window's edges
    # No reranker on this server: every call fails, and the failures are counted by status code.
    failing = subprocess.run(
        [*base, "--mode", "rerank", *common], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert failing.returncode == 0, failing.stderr
    report = json.loads(failing.stdout)
    assert report["ok"] == 0 and report["errors"].get("INVALID_ARGUMENT", 0) > 0


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_texts_come_from_jsonl_or_plain_lines(tmp_path: Path) -> None:
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"text": "a"}\n\n{"text": "b"}\n{"text": "  "}\n', encoding="utf-8")
    assert read_texts(jsonl) == ("a", "b")
    plain = tmp_path / "q.txt"
    plain.write_text("first query\nsecond query\n", encoding="utf-8")
    assert read_texts(plain, limit=1) == ("first query",)
    with pytest.raises(BenchError):
        read_texts(tmp_path / "missing.jsonl")
    with pytest.raises(BenchError):
        BenchConfig(target="x:1", texts=("a",), mode="fuzzy")
