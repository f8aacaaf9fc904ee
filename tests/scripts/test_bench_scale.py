"""The shard-cost benchmark on tiny synthetic shards: its rows are measurements of the real classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scripts import bench_scale


def test_synthetic_vectors_are_seeded_unit_rows_with_near_neighbours() -> None:
    a = bench_scale.synthetic_vectors(1_000, seed=3, chunk=300)
    b = bench_scale.synthetic_vectors(1_000, seed=3, chunk=300)
    assert a.shape == (1_000, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(a, b)  # seeded: the same shard every run
    queries = bench_scale.synthetic_queries(a, 50, seed=3)
    best = (queries @ a.T).max(axis=1)
    assert best.mean() > 0.5  # every query has a close document, as real queries do
    unrelated = a[:200] @ a[200:400].T
    assert abs(float(unrelated.mean())) < 0.1


def test_synthetic_texts_have_the_documented_length() -> None:
    texts = list(bench_scale.synthetic_texts(300, seed=5))
    lengths = [len(t.split()) for t in texts]
    assert len(texts) == 300
    assert 100 < np.mean(lengths) < 140
    assert texts == list(bench_scale.synthetic_texts(300, seed=5))


def test_rows_for_a_small_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.jsonl"
    code = bench_scale.main(
        [
            "--sizes",
            "1500",
            "--types",
            "flat",
            "hnsw",
            "--queries",
            "20",
            "--bm25",
            "--workdir",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["kind"], r["index_type"]) for r in rows] == [("dense", "flat"), ("dense", "hnsw"), ("bm25", "bm25")]
    flat, hnsw, bm25 = rows
    assert flat["recall_at_100"] == 1.0
    assert 0.8 < hnsw["recall_at_100"] <= 1.0
    assert 1536 <= flat["bytes_per_doc"] < 1600  # 384 float32 per document plus FAISS's header
    assert hnsw["bytes_per_doc"] > flat["bytes_per_doc"]  # the graph links come on top of the vectors
    assert bm25["recall_at_100"] is None and bm25["index_bytes"] > 0
    assert all(r["p99_ms"] >= r["p50_ms"] > 0 and r["cpu_ms"] > 0 and r["build_cpu_s"] > 0 for r in rows)
    assert capsys.readouterr().out.count("\n") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]  # the indexes were removed


def test_ivfpq_on_too_few_vectors_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        bench_scale.main(["--sizes", "100", "--types", "ivfpq"])
    assert raised.value.code == 2
    assert "ivfpq needs at least 256 vectors" in capsys.readouterr().err


def test_a_missing_workdir_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        bench_scale.main(["--sizes", "300", "--types", "flat", "--workdir", str(tmp_path / "nope")])
    assert raised.value.code == 2
    assert f"--workdir: {tmp_path / 'nope'} is not a directory" in capsys.readouterr().err


def test_ivfpq_parameters_reach_the_index_and_the_row(tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    argv = ["--sizes", "2000", "--types", "ivfpq", "--queries", "10", "--workdir", str(tmp_path), "--out", str(out)]
    assert bench_scale.main([*argv, "--ivf-nlist", "16", "--ivf-nprobe", "16", "--pq-m", "32"]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["params"] == "nlist=16 nprobe=16 m=32 nbits=8"
    assert 60 < row["bytes_per_doc"] < 1536  # 32 one-byte codes plus ids and the cell lists: far below the floats
    assert row["recall_at_100"] > 0.5  # every cell probed: only the product quantization loses neighbours
