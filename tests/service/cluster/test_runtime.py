"""Connecting to Ray: a dead or malformed address fails fast with a named one-line error, and a local
cluster stops with its owner, SIGTERM included."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.cluster.errors import ClusterUnavailableError
from service.cluster.runtime import connect, parse_address

ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_address_where_nothing_listens_fails_within_the_timeout() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ClusterUnavailableError) as caught:
        connect(address, timeout=1.0)
    message = str(caught.value)
    assert message.startswith(f"Ray cluster {address}: no answer on the GCS port within 1 s")
    assert "\n" not in message
    assert time.monotonic() - started < 30  # bounds a hang, not a speed claim: Ray alone retries for minutes


@pytest.mark.parametrize("address", ["localhost", "10.0.0.5:", ":6379", "10.0.0.5:http", "10.0.0.5:70000"])
def test_a_malformed_address_is_named(address: str) -> None:
    with pytest.raises(ClusterUnavailableError, match="expected host:port"):
        parse_address(address)


CHILD = """
import sys, time
sys.path.insert(0, {root!r})
from service.cluster.runtime import connect
cluster = connect(None, num_cpus=1)
print(cluster.temp_dir, flush=True)
time.sleep(600)
"""


def processes_under(path: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if path in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.ray
def test_sigterm_stops_the_local_cluster_of_that_process_only(ray_cluster) -> None:
    env = dict(os.environ, RAY_ADDRESS=str(ray_cluster.address))  # must not make the child join this cluster
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(root=str(ROOT))],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        temp_dir = child.stdout.readline().strip()
        assert temp_dir.startswith("/tmp/ray-") and processes_under(temp_dir)
        child.send_signal(signal.SIGTERM)
        # Ray's driver handler (chained after ours) exits with status 15; without it the signal kills.
        # Shutting a local cluster down took over 60 s on a loaded 2-core machine: the wait is long,
        # the child's sleep longer still, so only the signal can end it in time.
        assert child.wait(timeout=240) in (signal.SIGTERM, -signal.SIGTERM)
    finally:
        if child.poll() is None:
            child.kill()
    deadline = time.monotonic() + 30
    while processes_under(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_under(temp_dir) == []
    assert not Path(temp_dir).exists()
    # The session's own cluster is untouched.
    import ray

    assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2.0
