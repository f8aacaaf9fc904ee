"""``sleuth serve --ray --kb`` as a user runs it: an unsharded index served as one shard and the linker
as the Serve application ``sleuth:<model>:linker``, answering as the local commands do."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.demo import demo_kb_dir
from tests.retrieval.test_sharding import medium_docs
from tests.service.cluster.test_cli_ray_serve import ENV, ROOT, _sleuth
from tests.service.lifecycle_helpers import free_port

pytestmark = [pytest.mark.ray, pytest.mark.integration]
TEXT = json.loads((demo_kb_dir() / "train.jsonl").read_text().splitlines()[0])["text"]


def test_serve_ray_with_a_kb_links_and_searches_like_the_local_commands(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in medium_docs()), encoding="utf-8")
    index, kb, demo = tmp_path / "index", tmp_path / "kb", demo_kb_dir()
    built = _sleuth("index", "build", "--corpus", str(corpus), "--out", str(index), "--no-cache")
    assert built.returncode == 0, built.stderr
    built = _sleuth("kb", "build", "--entities", str(demo / "entities.jsonl"), "--aliases", str(demo / "aliases.tsv"),
                    "--out", str(kb))  # fmt: skip
    assert built.returncode == 0, built.stderr
    port = free_port()
    log_path = tmp_path / "serve.log"
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--index", str(index), "--kb", str(kb), "--ray",
         "--replicas", "1", "--ray-cpus", "0.1", "--encoder-runtime", "torch", "--port", str(port), "--no-feedback"],
        cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "ready: serving" not in log_path.read_text() and time.monotonic() < deadline:
            assert server.poll() is None, log_path.read_text()
            time.sleep(1)
        assert "deploying the linker of KB" in log_path.read_text()
        remote = _sleuth("link", "--json", "--top", "2", "--target", f"127.0.0.1:{port}", TEXT)
        local = _sleuth("link", "--json", "--top", "2", "--kb", str(kb), TEXT)
        assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
        got, expected = json.loads(remote.stdout), json.loads(local.stdout)
        assert [(m["start"], m["end"], m["entity"]) for m in got] == [
            (m["start"], m["end"], m["entity"]) for m in expected
        ]
        assert any(m["entity"] for m in got)
        assert [m["score"] for m in got] == pytest.approx([m["score"] for m in expected], abs=1e-4)

        query = ["search", "wild wolf packs", "--mode", "hybrid", "-k", "5", "--json"]
        remote = _sleuth(*query, "--target", f"127.0.0.1:{port}")
        local = _sleuth(*query, "--index", str(index))
        assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
        hits, expected_hits = json.loads(remote.stdout)["hits"], json.loads(local.stdout)["hits"]
        assert [h["doc_id"] for h in hits] == [h["doc_id"] for h in expected_hits] != []
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) == 0
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
