"""Start-up says what it does: each loading phase is logged, and one line says the server is ready, where,
serving which versions.

The encoder is the tests' keyword encoder (``encoder_factory`` replaced); the index is the tiny one
and the linker is the demo's (demo KB, model trained at start-up on the demo documents).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

import grpc
import pytest

import service.serving.loading
from service.config import ServerConfig
from service.generated.sleuth.v1 import linking_pb2, linking_pb2_grpc, search_pb2, search_pb2_grpc
from service.serving.builder import serve
from service.serving.loading import Services, load_services
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.service.conftest import event_loop_thread

READY = re.compile(r"^ready: serving (?P<versions>.+) on 127\.0\.0\.1:(?P<port>\d+) \(started in [\d.]+ s\)$")


@pytest.fixture
def demo_services(tiny_index, monkeypatch: pytest.MonkeyPatch, caplog) -> Services:
    monkeypatch.setattr(
        service.serving.loading, "encoder_factory", lambda config: lambda name: FakeEncoder(TINY_KEYWORDS)
    )
    caplog.set_level(logging.INFO)
    return load_services(ServerConfig(host="127.0.0.1", port=0, index=tiny_index.path))


def test_loading_logs_each_phase_and_trains_the_demo_linker(demo_services: Services, caplog) -> None:
    loading = caplog.get_records("setup")  # the fixture loaded
    messages = [record.getMessage() for record in loading if record.name.startswith("service.serving")]
    phases = ["loading search index", "loading encoder", "loading the demo KB", "training the demo linker model"]
    for phase in phases:
        assert any(message.startswith(phase) for message in messages), (phase, messages)
    order = [next(i for i, m in enumerate(messages) if m.startswith(phase)) for phase in phases]
    assert order == sorted(order)
    loaded = demo_services.linker
    assert loaded is not None and loaded.model_version == "linker@demo" and loaded.kb_version.startswith("kb@demo-")
    assert any(f"linking: {loaded.kb_version}" in m and "linker@demo loaded in" in m for m in messages)
    assert set(loaded.drift_reference) == {"mentions_per_doc", "nil_rate"}


def test_the_ready_line_names_the_port_and_the_versions_served(demo_services: Services, caplog) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, threads=2)
    loop = event_loop_thread()
    stop = asyncio.Event()
    started = time.perf_counter()
    serving = asyncio.run_coroutine_threadsafe(serve(config, demo_services, started=started, stop=stop), loop)
    try:
        deadline = time.monotonic() + 60
        while not (ready := [r.getMessage() for r in caplog.records if r.getMessage().startswith("ready:")]):
            assert not serving.done(), serving.exception()
            assert time.monotonic() < deadline, "no ready line"
            time.sleep(0.05)
        [line] = ready
        match = READY.match(line)
        assert match is not None, line
        versions = match["versions"].split(", ")
        index_version = demo_services.searcher.index.version
        assert set(versions) == {index_version, demo_services.linker.kb_version, "linker@demo"}
        # the port it names is the one answering
        with grpc.insecure_channel(f"127.0.0.1:{match['port']}") as channel:
            found = search_pb2_grpc.SearchServiceStub(channel).Search(search_pb2.SearchRequest(query="cat"), timeout=30)
            assert found.index_version == index_version
            linked = linking_pb2_grpc.LinkingServiceStub(channel).Link(
                linking_pb2.LinkRequest(text="Michael Jordan won six NBA titles with the Bulls."), timeout=30
            )
            assert linked.model_version == "linker@demo"
    finally:
        loop.call_soon_threadsafe(stop.set)
        serving.result(60)
    assert any(r.getMessage() == "stopped" for r in caplog.records)
