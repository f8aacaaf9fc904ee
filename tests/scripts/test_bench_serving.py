"""The serving benchmark waits for the ready line each worker of the server logs."""

from __future__ import annotations

from types import SimpleNamespace

from scripts.bench_serving import all_ready
from service.config import ServerConfig
from service.serving.builder import ready_message


def test_ready_once_every_worker_logged_the_servers_ready_line() -> None:
    running = SimpleNamespace(lifecycle=SimpleNamespace(versions=lambda: {"search": "search-index@1d39"}), port=50051)
    line = ready_message(ServerConfig(host="127.0.0.1"), running, 7.5)  # type: ignore[arg-type]
    supervisor = "INFO service.serving.workers: 2 workers serving on 127.0.0.1:50051 (pids [1, 2])\n"
    assert not all_ready(supervisor, 2)
    assert not all_ready(supervisor + f"[worker 0] {line}\n", 2)
    assert all_ready(supervisor + f"[worker 0] {line}\n[worker 1] {line}\n", 2)
    assert all_ready(f"{line}\n", 1)
