"""The CPU accounting of the scatter-gather benchmark counts a process and its descendants."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scripts.bench_ray_front import tree_cpu_seconds

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

BUSY_CHILD = "\n".join(
    [
        "import time",
        "t = time.process_time()",
        "while time.process_time() - t < 0.6: pass",
        "print('done', flush=True)",
        "input()",
    ]
)


def test_tree_cpu_counts_a_busy_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"done\n"  # the child has spent its 0.6 s of CPU and is alive
        assert tree_cpu_seconds(child.pid) >= 0.55
        own = os.times()
        # this process's tree holds the child's CPU on top of its own
        assert tree_cpu_seconds() - (own.user + own.system) >= 0.5
    finally:
        child.communicate(b"\n", timeout=30)


def test_tree_cpu_of_a_missing_process_is_zero() -> None:
    assert tree_cpu_seconds(2**22 + 12345) == 0.0
