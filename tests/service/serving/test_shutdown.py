"""Graceful shutdown: on SIGTERM the server stops accepting, finishes in-flight calls, exits 0.

The server runs in a subprocess (``tests/service/serving_app.py``), with one process and with
``--workers 2``; a request is provably in flight (its encoder call has started and sleeps) when
the signal arrives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.generated.sleuth.v1 import search_pb2, search_pb2_grpc
from service.interceptors.drain import HandlerTasks
from tests.service.lifecycle_helpers import free_port

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 180.0  # importing torch and friends on a loaded 2-core machine is slow


def wait_until_serving(address: str, process: subprocess.Popen) -> None:
    end = time.monotonic() + START_TIMEOUT
    while time.monotonic() < end:
        assert process.poll() is None, f"the server exited early with {process.returncode}"
        with grpc.insecure_channel(address) as channel:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
            except grpc.RpcError:
                status = None
        if status == health_pb2.HealthCheckResponse.SERVING:
            return
        time.sleep(0.5)
    pytest.fail("the server did not become ready")


@contextmanager
def server_process(
    index: Path, markers: Path, workers: int, log: Path, port: int | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port() if port is None else port
    env = {**os.environ, "SLEUTH_TEST_MARKERS": str(markers), "SLEUTH_TEST_DELAY": "8", "PYTHONPATH": str(REPO)}
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.service.serving_app", str(index), str(port), str(workers)],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"127.0.0.1:{port}", process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)


def in_flight_then_sigterm(address: str, process: subprocess.Popen, markers: Path) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        in_flight = stub.Search.future(search_pb2.SearchRequest(query="slow cat"), timeout=120)
        end = time.monotonic() + 60
        while not any(markers.iterdir()):
            assert time.monotonic() < end, "the slow request never reached the encoder"
            assert not in_flight.done(), in_flight.exception()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)

        # New calls are refused once shutdown has begun (while the in-flight one is still running).
        refused = False
        end = time.monotonic() + 7
        while time.monotonic() < end and not in_flight.done():
            with grpc.insecure_channel(address) as fresh:
                try:
                    search_pb2_grpc.SearchServiceStub(fresh).Search(
                        search_pb2.SearchRequest(query="dog", mode="bm25"), timeout=1
                    )
                except grpc.RpcError:
                    refused = True
                    break
            time.sleep(0.1)
        assert refused, "a new call was still accepted seconds after SIGTERM"

        response = in_flight.result(timeout=60)  # finished within the grace period
        assert response.hits[0].doc_id == "cats"
    assert process.wait(timeout=60) == 0


def test_sigterm_finishes_the_in_flight_request_and_exits_0(tiny_index, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    log = tmp_path / "server.log"
    with server_process(tiny_index.path, markers, 1, log) as (address, process):
        wait_until_serving(address, process)
        in_flight_then_sigterm(address, process, markers)
    text = log.read_text(errors="replace")
    assert "shutting down" in text and "Traceback" not in text


def test_sigterm_stops_every_worker_gracefully(tiny_index, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    log = tmp_path / "server.log"
    # Port 0: the supervisor reserves a free port and hands it to both workers.
    with server_process(tiny_index.path, markers, 2, log, port=0) as (_, process):
        end = time.monotonic() + START_TIMEOUT
        while (found := re.search(r"2 workers serving on 127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))) is None:
            assert time.monotonic() < end and process.poll() is None, log.read_text(errors="replace")
            time.sleep(0.2)
        address = f"127.0.0.1:{found.group(1)}"
        wait_until_serving(address, process)
        # Both workers must be up before the signal (the second may still be loading).
        while log.read_text(errors="replace").count("service.serving.builder: ready: serving") < 2:
            assert time.monotonic() < end and process.poll() is None, log.read_text(errors="replace")
            time.sleep(0.5)
        in_flight_then_sigterm(address, process, markers)
    text = log.read_text(errors="replace")
    assert text.count("shutting down") == 2 and "workers exited with [0, 0]" in text
    assert "Traceback" not in text


def test_stop_waits_for_call_handlers_and_cancels_stragglers(caplog: pytest.LogCaptureFixture) -> None:
    # grpc.aio's Server.stop can return while the tasks running the last calls are a few loop turns
    # from done; asyncio.run then cancels them and gRPC logs a CancelledError traceback.
    # RunningServer.stop waits for them (HandlerTasks); one that does not return in time is cancelled.
    async def scenario() -> tuple[asyncio.Task, asyncio.Task, HandlerTasks]:
        tracker = HandlerTasks()

        async def call(seconds: float) -> None:
            async def continuation(details: grpc.HandlerCallDetails) -> None:
                return None

            await tracker.intercept_service(continuation, None)  # type: ignore[arg-type]
            await asyncio.sleep(seconds)

        returning, stuck = asyncio.create_task(call(0.2)), asyncio.create_task(call(60))
        await asyncio.sleep(0)  # both have started (and registered)
        await tracker.wait(timeout=1.0)
        return returning, stuck, tracker

    with caplog.at_level(logging.WARNING, logger="service.interceptors.drain"):
        returning, stuck, tracker = asyncio.run(scenario())
    assert returning.done() and not returning.cancelled()
    assert stuck.cancelled()
    assert not tracker.tasks
    assert [r.getMessage() for r in caplog.records] == [
        "1 call handler(s) still running 1.0 s after the server stopped; cancelling them"
    ]
