"""Admission control and deadlines: what keeps the server responsive past its capacity.

Two rules, both cheap and both enforced before any expensive work:

* **A bounded number of requests in flight.** :class:`AdmissionLimiter` counts the requests
  admitted and not yet answered (queued for the encoder, encoding, or searching). Past
  ``max_inflight`` a request is refused at once with :class:`OverloadedError`
  (``RESOURCE_EXHAUSTED``), so an overloaded server answers "try later" in microseconds instead
  of letting every caller's latency grow without bound. Clients are expected to back off.
* **Deadlines are honoured, and expired work is dropped.** :class:`Deadline` carries the call's
  deadline into the worker threads; each stage calls :meth:`Deadline.check` before it starts, so a
  request whose caller has given up is not encoded or searched in the background. (gRPC also
  cancels the handler task when the deadline passes; the batcher then skips the cancelled item.)

Both run on the event loop thread only (the limiter is a plain counter, no lock needed).

Example:
    >>> limiter = AdmissionLimiter(max_inflight=2)
    >>> with limiter.admit():
    ...     limiter.inflight
    1
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

DEFAULT_MAX_INFLIGHT = 256
"""Default bound on requests in flight per worker process.

It bounds memory and the worst-case queue, not latency: at the hybrid throughput measured on 2
cores (tens of queries/s per worker, docs/benchmarks.md) a full queue takes seconds to drain, and
BM25-only requests drain it in a fraction of a second. Latency is bounded by deadlines instead
(expired requests are dropped unserved). Lower ``--max-inflight`` to refuse earlier.
"""


class OverloadedError(Exception):
    """The server is at its in-flight limit; the request was refused before any work (retry later)."""


class DeadlineExpiredError(Exception):
    """The request's deadline passed before (or while) the server worked on it; its work is dropped."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"deadline exceeded before {stage}")
        self.stage = stage


class AdmissionLimiter:
    """Admits at most ``max_inflight`` units of work at a time; refuses the rest at once.

    A unary request costs 1; a batch costs its number of items (capped at ``max_inflight`` so
    that a legal batch is always admissible on an idle server).
    """

    def __init__(self, max_inflight: int = DEFAULT_MAX_INFLIGHT) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        self.max_inflight = max_inflight
        self._inflight = 0
        self.refused = 0

    @property
    def inflight(self) -> int:
        return self._inflight

    @contextmanager
    def admit(self, cost: int = 1) -> Iterator[None]:
        """Hold ``cost`` units while the block runs; raise :class:`OverloadedError` if they are not free."""
        cost = max(1, min(cost, self.max_inflight))
        if self._inflight + cost > self.max_inflight:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                logger.warning("overloaded: %d in flight, refused %d requests so far", self._inflight, self.refused)
            raise OverloadedError(
                f"server overloaded ({self._inflight} requests in flight, limit {self.max_inflight}); retry later"
            )
        self._inflight += cost
        try:
            yield
        finally:
            self._inflight -= cost


class _HasTimeRemaining(Protocol):
    def time_remaining(self) -> float | None: ...


@dataclass(frozen=True)
class Deadline:
    """An absolute deadline on the ``time.monotonic`` clock (``None``: the caller set none)."""

    at: float | None = None

    @classmethod
    def from_context(cls, context: _HasTimeRemaining) -> Deadline:
        """The deadline of a gRPC call (``context.time_remaining()`` is ``None`` without one)."""
        remaining = context.time_remaining()
        return cls(None if remaining is None else time.monotonic() + remaining)

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def check(self, stage: str) -> None:
        """Raise :class:`DeadlineExpiredError` if the deadline has passed (call before each stage)."""
        if self.expired:
            raise DeadlineExpiredError(stage)
