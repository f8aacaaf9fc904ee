"""``sleuth serve --ray --kb`` as a user runs it: a private local cluster, a sharded index (a Serve
application per shard) and the linker (``sleuth:<model>:linker``) answering as the local commands do,
and SIGTERM stops the server and its cluster.

One server answers every check: starting a private cluster and its deployments is the slow part.
The server runs as the real command in a child process (it owns its cluster and gets SIGTERM); the
builds and the clients run in this process through the CLI's ``main``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.cli import main
from service.demo import demo_kb_dir
from tests.retrieval.test_sharding import medium_docs
from tests.service.lifecycle_helpers import free_port

pytestmark = [pytest.mark.ray, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TEXT = json.loads((demo_kb_dir() / "train.jsonl").read_text().splitlines()[0])["text"]


def _sleuth(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``sleuth argv`` run in this process."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_serve_ray_searches_and_links_like_the_local_commands_and_sigterm_stops_its_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in medium_docs()), encoding="utf-8")
    index, kb, demo = tmp_path / "index", tmp_path / "kb", demo_kb_dir()
    code, _, err = _sleuth(capsys, "index", "build", "--corpus", str(corpus), "--out", str(index), "--shards", "2",
                           "--no-cache")  # fmt: skip
    assert code == 0, err
    code, _, err = _sleuth(capsys, "kb", "build", "--entities", str(demo / "entities.jsonl"),
                           "--aliases", str(demo / "aliases.tsv"), "--out", str(kb))  # fmt: skip
    assert code == 0, err
    port = free_port()
    log_path = tmp_path / "serve.log"
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--index", str(index), "--kb", str(kb), "--ray",
         "--replicas", "1", "--ray-cpus", "0.1", "--port", str(port), "--no-feedback"],
        cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while "ready: serving" not in log_path.read_text() and time.monotonic() < deadline:
            assert server.poll() is None, log_path.read_text()
            time.sleep(1)
        assert "deploying the linker of KB" in log_path.read_text()
        for mode in ("bm25", "hybrid"):
            query = ["search", "wild wolf packs", "--mode", mode, "-k", "5", "--json"]
            remote = _sleuth(capsys, *query, "--target", f"127.0.0.1:{port}")
            local = _sleuth(capsys, *query, "--index", str(index))
            assert remote[0] == local[0] == 0, remote[2] + local[2]
            got, expected = json.loads(remote[1])["hits"], json.loads(local[1])["hits"]
            assert [h["doc_id"] for h in got] == [h["doc_id"] for h in expected] != []
            assert [h["score"] for h in got] == pytest.approx([h["score"] for h in expected], abs=1e-5)

        remote = _sleuth(capsys, "link", "--json", "--top", "2", "--target", f"127.0.0.1:{port}", TEXT)
        local = _sleuth(capsys, "link", "--json", "--top", "2", "--kb", str(kb), TEXT)
        assert remote[0] == local[0] == 0, remote[2] + local[2]
        linked, expected_links = json.loads(remote[1]), json.loads(local[1])
        assert [(m["start"], m["end"], m["entity"]) for m in linked] == [
            (m["start"], m["end"], m["entity"]) for m in expected_links
        ]
        assert any(m["entity"] for m in linked)
        assert [m["score"] for m in linked] == pytest.approx([m["score"] for m in expected_links], abs=1e-4)

        cluster = _descendants(server.pid)
        assert len(cluster) >= 3  # the private cluster's processes (GCS, raylet, workers) run under the server
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) == 0
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in cluster) and time.monotonic() < deadline:
            time.sleep(1)
        assert not [pid for pid in cluster if _alive(pid)]
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
