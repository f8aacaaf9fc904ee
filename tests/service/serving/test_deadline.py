"""Deadlines: an expired request is answered DEADLINE_EXCEEDED and its work is dropped."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest

from retrieval.pipeline import Searcher, SearchRequest
from service.config import ServerConfig
from service.generated.sleuth.v1 import search_pb2, search_pb2_grpc
from service.serving.batching import BatchingConfig, EncodeBatcher
from service.serving.limits import AdmissionLimiter, Deadline, DeadlineExpiredError, OverloadedError
from service.serving.loading import Services
from service.serving.runner import SearchRunner
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.service.serving_helpers import GatedEncoder, serving

CONFIG = ServerConfig(host="127.0.0.1", port=0, threads=2, batch_max_wait_ms=0.0)


class RecordingSearcher(Searcher):
    """Records the queries that reached the search stage."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ran: list[str] = []

    def run(self, request, query_vector):
        self.ran.append(request.query)
        return super().run(request, query_vector)


def test_expired_request_gets_deadline_exceeded_and_is_never_encoded_or_searched(tiny_index) -> None:
    encoder = GatedEncoder(TINY_KEYWORDS)
    searcher = RecordingSearcher(tiny_index, encoder)
    with serving(Services(searcher=searcher), CONFIG) as handle, grpc.insecure_channel(handle.address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        blocker = stub.Search.future(search_pb2.SearchRequest(query="slow cat"), timeout=60)
        assert encoder.entered.wait(30), "the first request never reached the encoder"
        # The encoder is now held shut: the next request can only wait in the batcher's queue.
        with pytest.raises(grpc.RpcError) as info:
            stub.Search(search_pb2.SearchRequest(query="loyal dog"), timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        encoder.release()
        assert blocker.result(timeout=30).hits[0].doc_id == "cats"
        # Let the batcher take its next turn; the expired item must be dropped, not encoded.
        assert stub.Search(search_pb2.SearchRequest(query="kitten"), timeout=30).hits
    assert "loyal dog" not in encoder.texts
    assert "loyal dog" not in searcher.ran
    assert handle.limiter.inflight == 0


def test_a_deadline_already_past_is_refused_before_any_stage() -> None:
    deadline = Deadline.after(-1.0)
    assert deadline.expired
    with pytest.raises(DeadlineExpiredError, match="before encoding"):
        deadline.check("encoding")
    assert not Deadline().expired and Deadline().remaining() is None


def test_runner_checks_the_deadline_before_searching(tiny_index, fake_encoder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    searcher = RecordingSearcher(tiny_index, fake_encoder)
    before = len(fake_encoder.calls)

    async def go() -> None:
        runner = SearchRunner(ThreadPoolExecutor(1), batching=BatchingConfig(max_wait_ms=0))
        try:
            with pytest.raises(DeadlineExpiredError):
                await runner.search(searcher, SearchRequest("cat", mode="bm25"), Deadline.after(-0.1))
            with pytest.raises(DeadlineExpiredError):
                await runner.search(searcher, SearchRequest("cat"), Deadline.after(-0.1))
            result = await runner.search(searcher, SearchRequest("cat"), Deadline.after(30))
            assert result.hits[0].doc_id == "cats"
        finally:
            await runner.aclose()

    asyncio.run(go())
    assert searcher.ran == ["cat"]
    assert fake_encoder.calls[before:] == [1]


def test_batcher_gathers_concurrent_encodings_into_bounded_batches() -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    queries = [f"cat dog {i}" for i in range(20)]

    async def go() -> list[np.ndarray]:
        batcher = EncodeBatcher(BatchingConfig(max_batch=8, max_wait_ms=50.0))
        try:
            return await asyncio.gather(*(batcher.encode(encoder.encode, q) for q in queries))
        finally:
            await batcher.aclose()

    rows = asyncio.run(go())
    assert max(encoder.calls) <= 8 and sum(encoder.calls) == 20 and len(encoder.calls) < 20
    np.testing.assert_allclose(np.stack(rows), FakeEncoder(TINY_KEYWORDS).encode(queries), rtol=1e-6)


def test_batcher_waits_at_most_max_wait_for_company() -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)

    async def go() -> float:
        batcher = EncodeBatcher(BatchingConfig(max_batch=64, max_wait_ms=5.0))
        try:
            t0 = time.monotonic()
            await batcher.encode(encoder.encode, "lonely cat")
            return time.monotonic() - t0
        finally:
            await batcher.aclose()

    # A lone request is not held for a batch that never fills (bound generous for loaded machines).
    assert asyncio.run(go()) < 5.0
    assert encoder.calls == [1]


def test_batcher_drops_queued_items_whose_deadline_passed() -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    gate = threading.Event()
    seen: list[str] = []

    def gated(texts):
        seen.extend(texts)
        gate.wait(30)
        return encoder.encode(texts)

    async def go() -> tuple[object, object, int]:
        batcher = EncodeBatcher(BatchingConfig(max_wait_ms=0.0))
        try:
            first = asyncio.ensure_future(batcher.encode(gated, "slow cat"))
            while not seen:  # the first item is encoding (blocked on the gate)
                await asyncio.sleep(0.01)
            late = asyncio.ensure_future(batcher.encode(gated, "late dog", Deadline.after(0.05)))
            await asyncio.sleep(0.2)  # its deadline passes while it waits in the queue
            gate.set()
            results = await asyncio.gather(first, late, return_exceptions=True)
            return results[0], results[1], batcher.stats.dropped
        finally:
            await batcher.aclose()

    first, late, dropped = asyncio.run(go())
    assert isinstance(first, np.ndarray) and isinstance(late, DeadlineExpiredError)
    assert dropped == 1 and seen == ["slow cat"]


def test_batcher_passes_encoder_errors_to_every_waiting_request() -> None:
    def broken(texts):
        raise RuntimeError("model exploded")

    async def go() -> list[object]:
        batcher = EncodeBatcher(BatchingConfig(max_wait_ms=20.0))
        try:
            return await asyncio.gather(*(batcher.encode(broken, q) for q in ("a", "b")), return_exceptions=True)
        finally:
            await batcher.aclose()

    assert [type(r) for r in asyncio.run(go())] == [RuntimeError, RuntimeError]


def test_batcher_survives_an_encoder_returning_the_wrong_number_of_rows() -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)

    def short(texts):
        return encoder.encode(texts)[:-1]

    async def go() -> tuple[list[object], np.ndarray]:
        batcher = EncodeBatcher(BatchingConfig(max_wait_ms=20.0))
        try:
            failed = await asyncio.gather(*(batcher.encode(short, q) for q in ("a", "b")), return_exceptions=True)
            return failed, await batcher.encode(encoder.encode, "cat")
        finally:
            await batcher.aclose()

    failed, row = asyncio.run(go())
    assert all(isinstance(r, RuntimeError) for r in failed)
    assert row.shape == (len(TINY_KEYWORDS) + 1,)


def test_admission_limiter_refuses_past_its_bound_and_frees_on_exit() -> None:
    limiter = AdmissionLimiter(max_inflight=2)
    with limiter.admit(), limiter.admit():
        with pytest.raises(OverloadedError), limiter.admit():
            pass
        assert limiter.inflight == 2
    assert limiter.inflight == 0 and limiter.refused == 1
    with limiter.admit(cost=500):  # a batch larger than the bound still runs on an idle server
        assert limiter.inflight == 2


def test_bm25_runs_on_the_event_loop_and_the_rest_on_the_pool(tiny_index, fake_encoder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    class ThreadRecordingSearcher(Searcher):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.threads: dict[str, str] = {}

        def run(self, request, query_vector):
            self.threads[request.mode] = threading.current_thread().name
            return super().run(request, query_vector)

    async def go(inline: bool) -> dict[str, str]:
        searcher = ThreadRecordingSearcher(tiny_index, fake_encoder)
        pool = ThreadPoolExecutor(1, thread_name_prefix="search-pool")
        runner = SearchRunner(pool, batching=BatchingConfig(max_wait_ms=0), inline_lexical=inline)
        try:
            for mode in ("bm25", "hybrid"):
                result = await runner.search(searcher, SearchRequest("cat", mode=mode), Deadline.after(30))
                assert result.hits[0].doc_id == "cats"
            assert runner.limiter.inflight == 0
        finally:
            await runner.aclose()
            pool.shutdown()
        return searcher.threads

    inline = asyncio.run(go(True))
    assert inline["bm25"] == "MainThread" and inline["hybrid"].startswith("search-pool")
    pooled = asyncio.run(go(False))
    assert pooled["bm25"].startswith("search-pool")
