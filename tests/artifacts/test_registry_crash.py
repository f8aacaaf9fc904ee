"""Crash safety and reproducibility of registry builds, with real processes.

The crash test starts builder processes that publish, activate, roll back and garbage-collect in
a loop, and SIGKILLs each at a random moment. After every kill: every visible version is complete
(manifest present, every file matching its checksum), the active pointer parses and names a
loadable version. At the end a new build removes what the killed ones left behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from artifacts import Manifest
from artifacts.registry import LOCKS_DIR, Registry
from retrieval.index import SearchIndex
from tests.conftest import TINY_KEYWORDS, FakeEncoder

WORKER = Path(__file__).with_name("registry_worker.py")
ROOT = Path(__file__).resolve().parents[2]
KILLS = 24


def worker(*args: str, seed: int | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    if seed is not None:
        env["PYTHONHASHSEED"] = str(seed)
    return subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def assert_consistent(registry: Registry) -> None:
    kind_dir = registry.root / "search-index"
    visible = [p for p in kind_dir.iterdir() if not p.name.startswith(".") and p.is_dir()]
    for path in visible:
        manifest = Manifest.read(path, kind="search-index")
        manifest.verify(path)  # complete: every listed file there with its checksum
        assert manifest.content_id == path.name
    pointer = registry.pointer("search-index")  # parses: never a half-written pointer
    if pointer.version is not None:
        active = registry.get(pointer.version)
        registry.verify(active)
        assert len(SearchIndex.load(active.path)) > 0


def test_killed_builds_never_leave_a_visible_half_written_version(tmp_path: Path, tiny_corpus: Path) -> None:
    registry = Registry.open(tmp_path / "registry")
    rng = random.Random(20240607)
    leftovers_seen = 0
    for round_ in range(KILLS):
        process = worker("churn", str(registry.root), str(tiny_corpus), str(round_))
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.6))  # a random point of the publish/activate/gc loop
        process.send_signal(signal.SIGKILL)
        assert process.wait(30) == -signal.SIGKILL
        process.stdout.close()
        assert_consistent(registry)
        kind_dir = registry.root / "search-index"
        leftovers_seen += any(p.name.startswith(".staging-") for p in kind_dir.iterdir())
    versions = registry.versions("search-index")
    assert len(versions) >= 3, "the builders should have published several versions"
    # A later build in this process removes every leftover of the killed ones.
    encoder = FakeEncoder(TINY_KEYWORDS)
    registry.publish("search-index", lambda out: SearchIndex.build(tiny_corpus, out, encoder))
    kind_dir = registry.root / "search-index"
    hidden = sorted(p.name for p in kind_dir.iterdir() if p.name.startswith("."))
    assert hidden == [".lock", LOCKS_DIR], hidden
    assert list((kind_dir / LOCKS_DIR).iterdir()) == []
    assert_consistent(registry)
    print(f"{KILLS} kills, {leftovers_seen} left a staging directory, {len(versions)} versions")


def test_same_inputs_and_params_rebuild_the_same_files(tmp_path: Path, tiny_corpus: Path) -> None:
    """Two builds in separate processes (different hash seeds): identical BM25 files and checksums."""
    first, second = Registry.open(tmp_path / "a"), Registry.open(tmp_path / "b")
    versions = []
    for registry, seed in ((first, 1), (second, 2)):
        process = worker("build", str(registry.root), str(tiny_corpus), "1.1", seed=seed)
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0
        versions.append(out.strip())
    assert versions[0] == versions[1]
    a, b = first.get(versions[0]), second.get(versions[1])
    assert a.manifest.files == b.manifest.files
    for name in a.manifest.files:
        if name.startswith("bm25/") or name == "docs.jsonl":
            assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name
    assert json.loads((a.path / "manifest.json").read_text())["content_id"] == a.content_id
