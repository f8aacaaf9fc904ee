"""A real gRPC server on port 0, run on its own event loop thread, for tests to call through a channel.

The access log goes to a handler the test session owns (never to stderr): a call that a test
gives up on finishes later, and its line would otherwise reach the terminal between tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.interceptors.telemetry import access_logger
from service.serving.builder import create_server
from service.serving.loading import Services

_LOOP: asyncio.AbstractEventLoop | None = None


def event_loop_thread() -> asyncio.AbstractEventLoop:
    """One event loop for every test server of the session (grpc.aio binds to the first loop it sees)."""
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
        threading.Thread(target=_LOOP.run_forever, daemon=True, name="test-grpc-loop").start()
    return _LOOP


@contextmanager
def started_server(services: Services, config: ServerConfig | None = None, timeout: float = 30) -> Iterator[Any]:
    """Start a server with ``services`` on a free port; yield the RunningServer; stop it on exit."""
    config = config or ServerConfig(host="127.0.0.1", port=0, threads=2)
    loop = event_loop_thread()

    async def start():
        running = await create_server(config, services)
        await running.start()
        return running

    running = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(0), loop).result(30)


@contextmanager
def running_server(services: Services, config: ServerConfig | None = None) -> Iterator[str]:
    """Start a server with ``services`` on a free port; yield its address; stop it on exit."""
    with started_server(services, config) as running:
        yield f"127.0.0.1:{running.port}"


@pytest.fixture(scope="session", autouse=True)
def quiet_access_log() -> Iterator[None]:
    """Keep the servers' JSON access log off stderr for the whole session (tests read it via ``access_log``)."""
    saved = (access_logger.handlers[:], access_logger.level, access_logger.propagate)
    access_logger.handlers[:] = [logging.NullHandler()]
    access_logger.setLevel(logging.INFO)  # the interceptor writes lines only when INFO is enabled
    access_logger.propagate = False
    yield
    access_logger.handlers[:], level, access_logger.propagate = saved
    access_logger.setLevel(level)


@pytest.fixture
def tiny_server(tiny_index, fake_encoder) -> Iterator[str]:
    with running_server(Services(searcher=Searcher(tiny_index, fake_encoder))) as address:
        yield address


@pytest.fixture
def linking_services(tiny_index, fake_encoder) -> Services:
    """The tiny index, and a linker on the tiny KB (fake encoder, spaCy mentions, a logistic model)."""
    from linking import (
        DisambiguatorConfig,
        EntityLinker,
        KnowledgeBase,
        MentionDetector,
        load_spacy,
        prepare_documents,
        train_disambiguator,
    )
    from service.serving.linker import LoadedLinker
    from tests.conftest import FakeEncoder
    from tests.linking.conftest import ALIASES, ENTITIES, KEYWORDS
    from tests.linking.test_pipeline import TRAIN

    linker = EntityLinker(
        KnowledgeBase(ENTITIES, ALIASES), FakeEncoder(KEYWORDS), detector=MentionDetector(load_spacy())
    )
    linker.scorer = train_disambiguator(
        prepare_documents(linker, TRAIN, "tiny"), DisambiguatorConfig(model_type="logistic")
    )
    return Services(searcher=Searcher(tiny_index, fake_encoder), linker=LoadedLinker(linker, "kb@tiny", "linker@tiny"))


@pytest.fixture
def linking_server(linking_services: Services) -> Iterator[str]:
    """A server with :func:`linking_services` on a free port; its address."""
    with running_server(linking_services) as address:
        yield address


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def access_log():
    handler = Lines()
    access_logger.addHandler(handler)
    yield handler.lines
    access_logger.removeHandler(handler)
