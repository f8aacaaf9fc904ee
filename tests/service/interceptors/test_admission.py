"""Link RPC: the in-flight bound and deadlines apply to it too (service/interceptors/admission.py)."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import linking_pb2, linking_pb2_grpc
from service.serving.linker import LoadedLinker
from service.serving.loading import Services
from tests.service.serving_helpers import serving


class GatedLinker:
    """Links nothing; a text containing "slow" blocks until ``release()``. Records every text it ran."""

    kb = None

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.entered = threading.Event()
        self._gate = threading.Event()

    def release(self) -> None:
        self._gate.set()

    def link(self, text, mentions=None, options=None) -> list:
        self.texts.append(text)
        if "slow" in text:
            self.entered.set()
            if not self._gate.wait(60):
                raise TimeoutError("the test never released the gate")
        return []


def test_link_is_bounded_and_expired_links_are_dropped(tiny_index, fake_encoder, monkeypatch) -> None:
    import service.interceptors.chain
    from service.interceptors.admission import AdmissionInterceptor
    from service.interceptors.chain import server_interceptors

    chains: list[list] = []

    def recording(config):
        chains.append(server_interceptors(config))
        return chains[-1]

    monkeypatch.setattr(service.interceptors.chain, "server_interceptors", recording)
    linker = GatedLinker()
    services = Services(searcher=Searcher(tiny_index, fake_encoder), linker=LoadedLinker(linker, "kb@t", "m@t"))
    # One executor thread; max_inflight 16 admits 16 // 8 = 2 link calls at a time.
    config = ServerConfig(host="127.0.0.1", port=0, threads=1, max_inflight=16)
    with serving(services, config) as handle, grpc.insecure_channel(handle.address) as channel:
        stub = linking_pb2_grpc.LinkingServiceStub(channel)
        held = stub.Link.future(linking_pb2.LinkRequest(text="slow text"), timeout=60)
        assert linker.entered.wait(30)
        # Second call: admitted, waits for the only thread, and its deadline passes there.
        with pytest.raises(grpc.RpcError) as info:
            stub.Link(linking_pb2.LinkRequest(text="expired text"), timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Fill both admission slots again, then one more is refused at once.
        limiter = next(i for i in chains[-1] if isinstance(i, AdmissionInterceptor)).limiter
        assert limiter.max_inflight == 2
        waiting = stub.Link.future(linking_pb2.LinkRequest(text="patient text"), timeout=60)
        end = time.monotonic() + 30
        while limiter.inflight < 2:
            assert time.monotonic() < end, "the second link call was never admitted"
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as info:
            stub.Link(linking_pb2.LinkRequest(text="extra text"), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "overloaded" in info.value.details()
        linker.release()
        assert held.result(timeout=30).kb_version == "kb@t"
        assert waiting.result(timeout=30).kb_version == "kb@t"
        assert stub.Link(linking_pb2.LinkRequest(text="after"), timeout=30).model_version == "m@t"
    assert "expired text" not in linker.texts
