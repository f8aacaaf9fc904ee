"""``sleuth index build --ray``: the same index as a local build, embedded by Ray Data actors.

The ``--ray`` build runs as the real command in a child process (the session's own Ray connection
would refuse a second one in this process) and starts and stops a private local cluster; the local
build it is compared with runs in this process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.index import SearchIndex
from service.cli import main
from tests.retrieval.test_sharding import medium_docs

pytestmark = [pytest.mark.ray, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[3]


def _sleuth(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def _vectors(directory: Path) -> tuple[list[str], np.ndarray]:
    """Document ids and their stored dense vectors, in corpus order (sharded or not)."""
    index = SearchIndex.load(directory)
    ids = list(index.dense.doc_ids)
    return ids, index.dense.vectors(np.arange(len(ids)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray-build") / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in medium_docs()), encoding="utf-8")
    return path


def test_ray_build_equals_the_local_build(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local = main(["index", "build", "--corpus", str(corpus), "--out", str(tmp_path / "local"), "--no-cache"])
    assert local == 0, capsys.readouterr().err
    on_ray = _sleuth(
        "index", "build", "--corpus", str(corpus), "--out", str(tmp_path / "ray"), "--no-cache",
        "--shards", "2", "--ray", "--ray-actors", "2", "--ray-cpus", "0.25",
    )  # fmt: skip
    assert on_ray.returncode == 0, on_ray.stderr
    assert "42 documents, 2 shards" in on_ray.stdout
    assert "embedding on Ray: 2 actor(s)" in on_ray.stderr
    local_ids, local_vectors = _vectors(tmp_path / "local")
    ray_ids, ray_vectors = _vectors(tmp_path / "ray")
    assert ray_ids == local_ids
    # ONNX float32 in each actor: equal up to float rounding (padding depends on which texts share a run)
    np.testing.assert_allclose(ray_vectors, local_vectors, atol=2e-5)
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["params"]["encoder"]["runtime"] == "onnx"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_dead_ray_address_is_a_one_line_error_before_the_encoder_loads(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the encoder must not load before the cluster answers")

    monkeypatch.setattr("retrieval.onnx_encoder.OnnxEncoder.load", no_model)
    address = f"127.0.0.1:{_free_port()}"
    argv = ["index", "build", "--corpus", str(corpus), "--out", str(tmp_path / "x"), "--ray", address]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"Ray cluster {address}" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray-cpus", "0"], "argument --ray-cpus: must be a finite number above 0, got 0"),
        (["--ray-cpus", "x"], "argument --ray-cpus: must be a number above 0, got 'x'"),
        (["--ray-actors", "0"], "argument --ray-actors: must be at least 1, got 0"),
    ],
)
def test_bad_ray_options_are_usage_errors(
    corpus: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["index", "build", "--corpus", str(corpus), "--out", str(tmp_path / "x"), "--ray", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
