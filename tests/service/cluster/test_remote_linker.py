"""RemoteLinker's rules without a cluster: a handle that loses replicas, hangs or fails.

The handle here stands in for a Serve deployment handle (``handle.link.remote(...).result(timeout_s)``);
the rules under test are the server's own: check the request before sending it, retry a lost replica,
give up with UNAVAILABLE (``LinkerUnavailableError``) at the deadline or on any other failure.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from artifacts import IncompatibleArtifactError
from linking import KnowledgeBase
from linking.pipeline import LinkOptions
from linking.types import Mention
from retrieval.errors import InvalidRequestError
from service.cluster.errors import LinkerUnavailableError
from service.cluster.serve_linker import RemoteLinker
from service.demo import demo_kb_dir
from service.servicers.status import status_for
from service.serving.linker import LoadedLinker, swap_kb


class ReplicaLost(Exception):
    pass


class _Response:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome

    def result(self, timeout_s: float) -> Any:
        if isinstance(self.outcome, threading.Event) and not self.outcome.wait(timeout_s):
            raise TimeoutError
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class FakeHandle:
    """Answers each call with the next outcome: an exception, an Event (waited on), or a value."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, Any, Any]] = []
        self.link = self

    def remote(self, text: str, mentions: Any, options: Any) -> _Response:
        self.calls.append((text, mentions, options))
        return _Response(self.outcomes.pop(0))


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    demo = demo_kb_dir()
    return KnowledgeBase.from_files([demo / "entities.jsonl"], [demo / "aliases.tsv"])


def _linker(handle: FakeHandle, kb: KnowledgeBase, **kwargs: Any) -> RemoteLinker:
    return RemoteLinker(handle, kb, is_retryable=lambda e: isinstance(e, ReplicaLost), retry_backoff_s=0, **kwargs)


def test_a_lost_replica_is_retried_and_the_answer_returned(kb: KnowledgeBase) -> None:
    handle = FakeHandle(ReplicaLost(), ReplicaLost(), ["links"])
    linker = _linker(handle, kb, max_attempts=3)
    spans = [Mention(0, 5, "Paris")]
    assert linker.link("Paris is big.", spans) == ["links"]
    assert linker.retries == 2 and len(handle.calls) == 3
    assert handle.calls[0][1] == spans and isinstance(handle.calls[0][2], LinkOptions)


def test_lost_replicas_past_max_attempts_are_unavailable(kb: KnowledgeBase) -> None:
    linker = _linker(FakeHandle(ReplicaLost(), ReplicaLost()), kb, max_attempts=2)
    with pytest.raises(LinkerUnavailableError, match="lost 2 time"):
        linker.link("Paris is big.")
    code, _ = status_for(LinkerUnavailableError("x"))
    assert code.name == "UNAVAILABLE"


def test_no_answer_by_the_deadline_and_other_failures_are_unavailable(kb: KnowledgeBase) -> None:
    with pytest.raises(LinkerUnavailableError, match=r"within 0\.2 s"):
        _linker(FakeHandle(threading.Event()), kb, timeout_s=0.2).link("Paris is big.")
    with pytest.raises(LinkerUnavailableError, match="linker failed: KeyError"):
        _linker(FakeHandle(KeyError("gone")), kb).link("Paris is big.")


def test_a_bad_request_is_refused_before_any_call(kb: KnowledgeBase) -> None:
    handle = FakeHandle()
    with pytest.raises(InvalidRequestError, match=r"mentions\[0\]"):
        _linker(handle, kb).link("Paris", [Mention(2, 40, "x")])
    with pytest.raises(InvalidRequestError, match="text"):
        _linker(handle, kb).link("  ")
    assert handle.calls == []


def test_switching_the_kb_or_model_of_a_ray_linker_is_a_failed_precondition(kb: KnowledgeBase, tmp_path: Path) -> None:
    from service.cli import main

    demo = demo_kb_dir()
    build = ["kb", "build", "--entities", str(demo / "entities.jsonl"), "--aliases", str(demo / "aliases.tsv")]
    assert main([*build, "--out", str(tmp_path / "kb")]) == 0
    loaded = LoadedLinker(_linker(FakeHandle(), kb), "kb@a", "prior-baseline")  # type: ignore[arg-type]
    with pytest.raises(IncompatibleArtifactError, match="cannot be switched; restart it") as refused:
        swap_kb(tmp_path / "kb", loaded)
    assert status_for(refused.value)[0].name == "FAILED_PRECONDITION"
    with pytest.raises(IncompatibleArtifactError, match="linker model of a running server"):
        loaded.linker.with_model(object(), object())
