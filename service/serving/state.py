"""The object a server serves now, swapped atomically, with per-version reference counts.

A request takes a :class:`Lease` when it starts and keeps that version for its whole life (its
encoding, retrieval and response all come from one version, and the response names it). A swap
installs a new version for requests that start afterwards; the old one is *draining* until its
last lease is released, then *released* (its ``on_release`` callback runs and the server drops
its reference, so its memory can go).

Example:
    >>> state = ServingState("search-index", "v1-searcher", "search-index@aaaa")
    >>> lease = state.acquire()
    >>> state.swap("v2-searcher", "search-index@bbbb")
    'search-index@aaaa'
    >>> (lease.version, state.current_version)
    ('search-index@aaaa', 'search-index@bbbb')
    >>> lease.release()  # the last request on @aaaa ends: it is released now
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

from artifacts.versions import utc_now

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class SlotStatus:
    """One served or draining version, as reported by :meth:`ServingState.status`."""

    kind: str
    version: str
    since: str
    inflight: int
    draining: bool


class _Slot(Generic[T]):
    __slots__ = ("inflight", "retired", "since", "value", "version")

    def __init__(self, value: T, version: str) -> None:
        self.value = value
        self.version = version
        self.since = utc_now()
        self.inflight = 0
        self.retired = False


class Lease(Generic[T]):
    """One request's hold on a version. Release it exactly once (``with`` does it for you)."""

    __slots__ = ("_released", "_slot", "_state")

    def __init__(self, state: ServingState[T], slot: _Slot[T]) -> None:
        self._state = state
        self._slot = slot
        self._released = False

    @property
    def value(self) -> T:
        return self._slot.value

    @property
    def version(self) -> str:
        return self._slot.version

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._state._release(self._slot)

    def __enter__(self) -> Lease[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class ServingState(Generic[T]):
    """The current value of one artifact kind (e.g. the ``Searcher``) and the versions draining.

    Thread-safe: requests acquire on the event loop, swaps may come from any thread.
    ``on_release(version, value)`` runs (outside the lock) when a swapped-out version's last
    lease is released, or at once if it had none.
    """

    def __init__(
        self,
        kind: str,
        value: T,
        version: str,
        *,
        on_release: Callable[[str, T], None] | None = None,
    ) -> None:
        self.kind = kind
        self._lock = threading.Lock()
        self._current: _Slot[T] = _Slot(value, version)
        self._draining: list[_Slot[T]] = []
        self._on_release = on_release
        self.released: list[str] = []  # versions released so far, oldest first (for status and tests)

    @property
    def current(self) -> T:
        return self._current.value

    @property
    def current_version(self) -> str:
        return self._current.version

    def acquire(self) -> Lease[T]:
        """Lease the current version for one request."""
        with self._lock:
            slot = self._current
            slot.inflight += 1
        return Lease(self, slot)

    def swap(self, value: T, version: str) -> str:
        """Serve ``value`` (named ``version``) to requests that start from now; returns the old version."""
        with self._lock:
            old = self._current
            self._current = _Slot(value, version)
            old.retired = True
            idle = old.inflight == 0
            if not idle:
                self._draining.append(old)
        logger.info(
            "%s: now serving %s (was %s; %d request(s) draining)", self.kind, version, old.version, old.inflight
        )
        if idle:
            self._released(old)
        return old.version

    def live_values(self) -> list[T]:
        """The current value and those still draining (a value released already is not among them)."""
        with self._lock:
            return [slot.value for slot in (self._current, *self._draining)]

    def status(self) -> list[SlotStatus]:
        """The current version first, then the draining ones."""
        with self._lock:
            slots = [self._current, *self._draining]
            return [SlotStatus(self.kind, s.version, s.since, s.inflight, s.retired) for s in slots]

    def _release(self, slot: _Slot[T]) -> None:
        with self._lock:
            slot.inflight -= 1
            done = slot.retired and slot.inflight == 0
            if done:
                self._draining.remove(slot)
        if done:
            self._released(slot)

    def _released(self, slot: _Slot[T]) -> None:
        self.released.append(slot.version)
        logger.info("%s: released %s (its last request finished)", self.kind, slot.version)
        if self._on_release is not None:
            try:
                self._on_release(slot.version, slot.value)
            except Exception:
                logger.exception("%s: on_release of %s failed", self.kind, slot.version)
        slot.value = None  # type: ignore[assignment]  # drop our reference: the old index can be freed
