"""Helpers for the serving tests: an encoder the test can hold shut, and a server handle.

The gated encoder makes overload and deadline tests deterministic: while the gate is shut the
encoder thread is provably busy, so "answered while the server was saturated" needs no timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np

from service.config import ServerConfig
from service.serving.builder import RunningServer, create_server
from service.serving.loading import Services
from tests.conftest import FakeEncoder
from tests.service.conftest import event_loop_thread


class GatedEncoder(FakeEncoder):
    """A :class:`FakeEncoder` whose calls holding a text with ``trigger`` block until ``release()``.

    Every text it encodes is recorded in ``texts`` (so a test can tell work that was dropped).
    """

    def __init__(self, keywords: list[str], trigger: str = "slow") -> None:
        super().__init__(keywords)
        self.trigger = trigger
        self.texts: list[str] = []
        self.entered = threading.Event()
        self._gate = threading.Event()

    def release(self) -> None:
        self._gate.set()

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        self.texts.extend(texts)
        if any(self.trigger in text for text in texts):
            self.entered.set()
            if not self._gate.wait(60):
                raise TimeoutError("the test never released the gate")
        return super().encode(texts, batch_size=batch_size, show_progress=show_progress)


@dataclass
class ServerHandle:
    address: str
    server: RunningServer

    @property
    def limiter(self):  # the AdmissionLimiter (service/serving/limits.py)
        return self.server.runner.limiter

    @property
    def batcher(self):  # the EncodeBatcher (service/serving/batching.py)
        return self.server.runner.batcher


@contextmanager
def serving(services: Services, config: ServerConfig) -> Iterator[ServerHandle]:
    """Like ``running_server`` (same shared event loop) but yields the server object too."""
    loop = event_loop_thread()

    async def start() -> RunningServer:
        running = await create_server(config, services)
        await running.start()
        return running

    running = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield ServerHandle(f"127.0.0.1:{running.port}", running)
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(0), loop).result(30)


def assert_clean(error: grpc.RpcError) -> None:
    """A fuzzed request's error must be INVALID_ARGUMENT with a short message: no internal details."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
    details = error.details() or ""
    assert "Traceback" not in details and "incident" not in details and 'File "' not in details
