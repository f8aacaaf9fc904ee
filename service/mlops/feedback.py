"""The feedback log: impressions, clicks and dwell, durable in SQLite.

The database runs in WAL mode with ``synchronous=FULL``: :meth:`FeedbackLog.record` returns only
after its transaction is on disk, so an event the server acknowledged survives a crash of the
server process (and of the machine). One row per event::

    impression  request_id, session_id, arm, query, doc_id, position   (doc_id NULL: a search with no hits)
    click       request_id, session_id, arm, doc_id, position[, dwell_ms]
    dwell       request_id, session_id, arm, doc_id, dwell_ms
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

EVENT_KINDS = ("impression", "click", "dwell")
MAX_EVENTS_PER_CALL = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('impression', 'click', 'dwell')),
    request_id  TEXT NOT NULL,
    session_id  TEXT NOT NULL DEFAULT '',
    arm         TEXT NOT NULL DEFAULT '',
    query       TEXT,
    doc_id      TEXT,
    position    INTEGER,
    dwell_ms    INTEGER,
    ts          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_request ON events (request_id);
"""


@dataclass(frozen=True)
class FeedbackEvent:
    """One user action. ``position`` is 1-based; ``timestamp`` is seconds since the epoch."""

    kind: str
    request_id: str
    session_id: str = ""
    arm: str = ""
    query: str | None = None
    doc_id: str | None = None
    position: int | None = None
    dwell_ms: int | None = None
    timestamp: float = field(default_factory=time.time)

    def problem(self) -> tuple[str, str] | None:
        """(field, message) of the first invalid field, or None."""
        if self.kind not in EVENT_KINDS:
            return "kind", f"must be one of {', '.join(EVENT_KINDS)}, got {self.kind!r}"
        if not self.request_id or len(self.request_id) > 128:
            return "request_id", "must be 1 to 128 characters"
        if len(self.session_id) > 128 or len(self.arm) > 64:
            return "session_id" if len(self.session_id) > 128 else "arm", "is too long"
        if self.kind in ("click", "dwell") and not self.doc_id:
            return "doc_id", f"is required for a {self.kind}"
        if self.doc_id is not None and len(self.doc_id) > 512:
            return "doc_id", "is longer than 512 characters"
        if self.position is not None and not (1 <= self.position <= 10_000):
            return "position", f"must be within [1, 10000], got {self.position}"
        if self.kind == "click" and self.position is None:
            return "position", "is required for a click"
        if self.dwell_ms is not None and not (0 <= self.dwell_ms <= 86_400_000):
            return "dwell_ms", "must be within [0, 86400000]"
        if self.kind == "dwell" and self.dwell_ms is None:
            return "dwell_ms", "is required for a dwell event"
        if self.query is not None and len(self.query) > 4096:
            return "query", "is longer than 4096 characters"
        return None


class FeedbackLog:
    """Append-only event store. Thread-safe; one connection, serialized writes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # timeout: several worker processes may share one log; a writer waits for the others' commits.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._set_up(deadline=time.monotonic() + 30)

    def _set_up(self, deadline: float) -> None:
        """WAL mode and the schema. Workers starting together race for a new file: switching the journal
        mode answers "database is locked" at once, without waiting, while another connection holds the
        file, so the loser retries until ``deadline``."""
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def record(self, events: Sequence[FeedbackEvent]) -> int:
        """Append ``events`` in one durable transaction; returns how many were written."""
        rows = [
            (e.kind, e.request_id, e.session_id, e.arm, e.query, e.doc_id, e.position, e.dwell_ms, e.timestamp)
            for e in events
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO events (kind, request_id, session_id, arm, query, doc_id, position, dwell_ms, ts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def events(self) -> Iterator[FeedbackEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, request_id, session_id, arm, query, doc_id, position, dwell_ms, ts"
                " FROM events ORDER BY id"
            ).fetchall()
        for row in rows:
            yield FeedbackEvent(*row)

    def close(self) -> None:
        with self._lock:
            self._db.close()
