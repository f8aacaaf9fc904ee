"""CoalescingCaller (no cluster): calls queued while one is in flight go out together, each gets its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.cluster.remote_index import CoalescingCaller


class Recorder:
    """A shard call that doubles its argument; the first call blocks until released."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, tuple]]] = []
        self.release = threading.Event()
        self.first_in_flight = threading.Event()

    def __call__(self, calls: list[tuple[str, tuple]], timeout: float) -> list[int]:
        self.batches.append(calls)
        if len(self.batches) == 1:
            self.first_in_flight.set()
            assert self.release.wait(10)
        return [args[0] * 2 for _, args in calls]


def test_a_lone_call_goes_out_at_once() -> None:
    send = Recorder()
    send.release.set()
    caller = CoalescingCaller(send)
    assert [caller.call("double", (i,), 5) for i in range(3)] == [0, 2, 4]
    assert len(send.batches) == 3 and caller.calls == 3


def test_calls_queued_behind_one_in_flight_go_out_as_one_batch() -> None:
    send = Recorder()
    caller = CoalescingCaller(send)
    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(caller.call, "double", (100,), 10)
        assert send.first_in_flight.wait(10)
        rest = [pool.submit(caller.call, "double", (i,), 10) for i in range(10)]
        deadline = time.monotonic() + 10
        while len(caller._queue) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        send.release.set()
        assert first.result() == 200
        assert [f.result() for f in rest] == [2 * i for i in range(10)]
    assert [len(b) for b in send.batches] == [1, 10]  # the ten waiting calls: one batch, not ten calls


def test_a_failed_batch_fails_each_of_its_calls() -> None:
    def broken(calls: list, timeout: float) -> list:
        raise ConnectionError("replica gone")

    caller = CoalescingCaller(broken)
    with pytest.raises(ConnectionError, match="replica gone"):
        caller.call("double", (1,), 5)
    with pytest.raises(RuntimeError, match="answered 0 of 1 calls"):
        CoalescingCaller(lambda calls, timeout: []).call("double", (1,), 5)


def test_a_waiter_past_its_deadline_times_out_and_is_never_sent() -> None:
    send = Recorder()
    caller = CoalescingCaller(send)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(caller.call, "double", (1,), 10)
        assert send.first_in_flight.wait(10)
        with pytest.raises(TimeoutError):
            caller.call("double", (2,), 0.1)
        send.release.set()
        assert first.result() == 2
    assert [len(b) for b in send.batches] == [1]  # the timed-out call was taken off the queue
