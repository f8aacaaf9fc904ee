from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from service.mlops.feedback import FeedbackEvent, FeedbackLog
from service.mlops.online_metrics import clicks_to_judgments, online_report, wilson

ROOT = Path(__file__).resolve().parents[3]

WRITER = textwrap.dedent(
    """
    import sys
    from service.mlops.feedback import FeedbackEvent, FeedbackLog
    log = FeedbackLog(sys.argv[1])
    i = 0
    while True:
        log.record([FeedbackEvent("click", f"r{i}", doc_id=f"d{i}", position=1)])
        print(i, flush=True)  # the acknowledgement: sent only after record() returned
        i += 1
    """
)


@pytest.mark.parametrize("kill_after", [5, 40, 150])
def test_acknowledged_events_survive_sigkill(tmp_path, kill_after: int) -> None:
    db = tmp_path / "feedback.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acknowledged = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= kill_after:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    log = FeedbackLog(db)
    stored = {e.request_id for e in log.events()}
    assert {f"r{i}" for i in range(acknowledged + 1)} <= stored
    assert log.count() >= acknowledged + 1


def test_event_validation_names_the_field() -> None:
    assert FeedbackEvent("click", "r1", doc_id="d", position=1).problem() is None
    assert FeedbackEvent("hover", "r1").problem()[0] == "kind"
    assert FeedbackEvent("click", "", doc_id="d", position=1).problem()[0] == "request_id"
    assert FeedbackEvent("click", "r", position=1).problem()[0] == "doc_id"
    assert FeedbackEvent("click", "r", doc_id="d", position=0).problem()[0] == "position"
    assert FeedbackEvent("dwell", "r", doc_id="d").problem()[0] == "dwell_ms"


def _session(rid: str, arm: str, clicks: list[tuple[str, int, int]], session: str = "") -> list[FeedbackEvent]:
    shown = [FeedbackEvent("impression", rid, session, arm, "kittens care", f"d{p}", p) for p in range(1, 6)]
    return shown + [FeedbackEvent("click", rid, session, arm, doc_id=d, position=p, dwell_ms=dw) for d, p, dw in clicks]


def test_online_report_per_arm_with_intervals(tmp_path) -> None:
    events = []
    for i in range(40):  # control: every other search clicked at position 2 with a long dwell
        events += _session(f"c{i}", "control", [("d2", 2, 60_000)] if i % 2 == 0 else [])
    for i in range(40):  # candidate: every search clicked at position 1, short dwell on odd ones
        events += _session(f"k{i}", "candidate", [("d1", 1, 60_000 if i % 2 == 0 else 1_000)])
    log = FeedbackLog(tmp_path / "f.db")
    log.record(events)
    reports = {r.arm: r for r in online_report(log.events())}
    control, candidate = reports["control"], reports["candidate"]
    assert (control.searches, candidate.searches) == (40, 40)
    assert control.ctr.value == 0.5 and candidate.ctr.value == 1.0
    assert control.zero_click_rate.value == 0.5 and candidate.zero_click_rate.value == 0.0
    assert control.mrr.value == pytest.approx(0.25) and candidate.mrr.value == pytest.approx(1.0)
    assert control.successful_session_rate.value == 0.5 and candidate.successful_session_rate.value == 0.5
    assert control.ctr.low < 0.5 < control.ctr.high
    assert control.ctr.high < candidate.ctr.low  # the difference is resolved at this size


def test_wilson_interval_known_values() -> None:
    est = wilson(10, 100)
    assert est.low == pytest.approx(0.0552, abs=1e-3) and est.high == pytest.approx(0.1744, abs=1e-3)
    assert wilson(0, 0).high == 1.0


def test_click_export_corrects_for_position() -> None:
    events = []
    for i in range(10):
        # d4 shown at position 4 and clicked in 3 of 10 searches; d1 at position 1 clicked in 3 of 10.
        clicks = [("d4", 4, 0), ("d1", 1, 0)] if i < 3 else []
        events += _session(f"r{i}", "control", clicks)
    judged = {(j.doc_id): j for j in clicks_to_judgments(events, threshold=0.5)}
    assert judged["d1"].weighted_ctr == pytest.approx(0.3) and judged["d1"].relevance == 0
    assert judged["d4"].weighted_ctr == pytest.approx(1.2) and judged["d4"].relevance == 2
    assert judged["d3"].relevance == 0 and judged["d3"].impressions == 10
    assert len({j.qid for j in judged.values()}) == 1


def test_arm_differences_detect_a_real_gap_and_not_a_null_one() -> None:
    from service.mlops.online_metrics import arm_differences

    events = []
    for i in range(200):
        events += _session(f"c{i}", "control", [("d3", 3, 1000)] if i % 2 else [])
        events += _session(f"k{i}", "candidate", [("d1", 1, 1000)] if i % 4 else [])
    diffs = {d.metric: d for d in arm_differences(events)}
    assert diffs["ctr"].difference == pytest.approx(0.25) and diffs["ctr"].detected
    assert diffs["mrr"].difference == pytest.approx(0.75 - 0.5 / 3) and diffs["mrr"].detected
    same = [e for e in events if e.arm == "control"]
    same += [
        FeedbackEvent(e.kind, "x" + e.request_id, e.session_id, "candidate", e.query, e.doc_id, e.position)
        for e in events
        if e.arm == "control"
    ]
    null = {d.metric: d for d in arm_differences(same)}
    assert null["ctr"].difference == 0.0 and not null["ctr"].detected


OPENER = textwrap.dedent(
    """
    import sys, time
    from service.mlops.feedback import FeedbackEvent, FeedbackLog
    while time.time() < float(sys.argv[2]):  # start together
        pass
    log = FeedbackLog(sys.argv[1])
    log.record([FeedbackEvent("impression", sys.argv[3], doc_id="d", position=1)])
    """
)


def test_workers_opening_a_new_log_together_all_start(tmp_path) -> None:
    # `serve --workers N` opens one log from N processes at once; a new file's WAL switch used to
    # fail the losers with "database is locked".
    import time

    for attempt in range(3):
        path = tmp_path / f"feedback-{attempt}.db"
        start = f"{time.time() + 1.5:.3f}"
        command = [sys.executable, "-c", OPENER, str(path), start]
        procs = [subprocess.Popen([*command, f"w{i}"], cwd=ROOT, stderr=subprocess.PIPE) for i in range(4)]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
        log = FeedbackLog(path)
        assert sorted(e.request_id for e in log.events()) == ["w0", "w1", "w2", "w3"]
        log.close()
