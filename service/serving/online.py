"""The online loop around each search: experiment arms, request ids, drift monitoring.

* :meth:`OnlineLoop.apply` assigns the request to the running experiment's arm (by its
  ``session_id``) and applies that arm's settings to the request.
* :meth:`OnlineLoop.observe` feeds the result's drift features to the monitor of the index
  version that served it (a hot swap starts a fresh monitor against the new reference).
* :meth:`OnlineLoop.annotate` stamps the response with its request id, experiment and arm, which
  clients send back with their feedback events.
* :class:`OnlineCollector` exports ``sleuth_drift_psi{feature}``, ``sleuth_drift_alert{feature}``
  and ``sleuth_experiment_requests_total{experiment,arm}`` to Prometheus.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from retrieval.drift import DriftMonitor
from retrieval.errors import InvalidRequestError
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher, SearchRequest, SearchResult
from service.generated.sleuth.v1 import search_pb2
from service.interceptors.telemetry import current_request_id, note_arm
from service.mlops.experiments import CONTROL, ExperimentSource

logger = logging.getLogger(__name__)

MAX_SESSION_ID = 128
MIN_OBSERVATIONS_FOR_ALARM = 50


@dataclass(frozen=True)
class Assignment:
    """The arm a request was served by; ``searcher`` is set when the arm serves another version."""

    experiment: str = ""
    arm: str = ""
    searcher: Searcher | None = None


ArmLoader = Callable[[str, Searcher], Searcher]
"""Loads the Searcher of an arm's ``version`` (a registry version or an artifact directory),
given the server's current Searcher (whose encoder, index or reranker it may share)."""


class ArmSearchers:
    """Searchers of arms that name another version, loaded in the background.

    A request whose arm's searcher is not loaded yet is served by the control arm, and labelled
    so: an arm label always names what actually served the request. A version that fails to load
    is logged once and not retried until the experiment file changes.
    """

    def __init__(self, loader: ArmLoader | None) -> None:
        self.loader = loader
        self._ready: dict[tuple[str, str], Searcher] = {}
        self._pending: set[tuple[str, str]] = set()
        self._failed: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get(self, ref: str, base: Searcher) -> Searcher | None:
        key = (ref, base.index.version)
        searcher = self._ready.get(key)
        if searcher is not None or self.loader is None:
            return searcher
        with self._lock:
            if key in self._pending or key in self._failed or key in self._ready:
                return self._ready.get(key)
            self._pending.add(key)
        threading.Thread(target=self._load, args=(key, base), name=f"arm-load-{ref}", daemon=True).start()
        return None

    def _load(self, key: tuple[str, str], base: Searcher) -> None:
        assert self.loader is not None
        try:
            searcher = self.loader(key[0], base)
        except Exception as exc:  # a bad arm must not take the server down
            logger.error("experiment arm version %s cannot be loaded: %s", key[0], exc)
            with self._lock:
                self._failed.add(key)
                self._pending.discard(key)
            return
        logger.info("experiment arm version %s loaded", key[0])
        with self._lock:
            self._ready[key] = searcher
            self._pending.discard(key)

    def forget_failures(self) -> None:
        with self._lock:
            self._failed.clear()


class OnlineLoop:
    """Experiment assignment and drift monitoring for one server. Thread-safe."""

    def __init__(
        self,
        experiments: ExperimentSource | None = None,
        drift_threshold: float = 0.25,
        arm_loader: ArmLoader | None = None,
    ) -> None:
        self.experiments = experiments
        self.drift_threshold = drift_threshold
        self.arms = ArmSearchers(arm_loader)
        self._experiment_seen: object = None
        self._lock = threading.Lock()
        self._monitor: DriftMonitor | None = None
        self._other_monitors: list[DriftMonitor] = []  # e.g. linking's mentions per document and NIL rate
        self._monitor_version: str | None = None
        self._arm_counts: dict[tuple[str, str], int] = {}
        self._last_alarm_log = 0.0

    # -- experiments --------------------------------------------------------------------------
    def apply(
        self, request: SearchRequest, session_id: str, base: Searcher | None = None
    ) -> tuple[SearchRequest, Assignment]:
        """The request as the assigned arm runs it, and the assignment (with the arm's searcher
        when the arm names another version; ``base`` is the server's current searcher)."""
        if len(session_id) > MAX_SESSION_ID:
            raise InvalidRequestError("session_id", f"is longer than {MAX_SESSION_ID} characters")
        experiment = self.experiments.current() if self.experiments is not None else None
        if experiment is None:
            return request, Assignment()
        if experiment is not self._experiment_seen:
            self._experiment_seen = experiment
            self.arms.forget_failures()
        arm = experiment.assign(session_id or None)
        settings = experiment.settings(arm)
        searcher = None
        if settings.version is not None:
            # BatchSearch passes no base: its items are served by the control arm's version.
            searcher = self.arms.get(settings.version, base) if base is not None else None
            if searcher is None:  # not loaded (yet): serve, and label, the control arm
                arm = CONTROL
                settings = experiment.settings(arm)
        changes: dict[str, Any] = {}
        if settings.rerank is not None:
            changes["rerank"] = settings.rerank
        if settings.mode is not None:
            changes["mode"] = settings.mode
        if settings.fusion:
            changes["fusion"] = dataclasses.replace(request.fusion, **settings.fusion)
        if changes:
            request = dataclasses.replace(request, **changes)
        with self._lock:
            key = (experiment.name, arm)
            self._arm_counts[key] = self._arm_counts.get(key, 0) + 1
        return request, Assignment(experiment.name, arm, searcher)

    def annotate(self, response: search_pb2.SearchResponse, assignment: Assignment) -> search_pb2.SearchResponse:
        note_arm(assignment.experiment, assignment.arm)
        response.request_id = current_request_id() or uuid.uuid4().hex[:16]
        response.experiment = assignment.experiment
        response.arm = assignment.arm
        return response

    def arm_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._arm_counts)

    # -- drift ----------------------------------------------------------------------------------
    def observe(self, result: SearchResult, index: SearchIndex) -> None:
        if not result.drift_features or not index.drift_reference:
            return
        monitor = self._monitor
        if self._monitor_version != result.index_version or monitor is None:
            with self._lock:
                if self._monitor_version != result.index_version:
                    self._monitor = DriftMonitor(index.drift_reference)
                    self._monitor_version = result.index_version
                monitor = self._monitor
        assert monitor is not None
        monitor.observe(result.drift_features)

    def add_monitor(self, monitor: DriftMonitor) -> None:
        """Export another monitor's features (names must not clash with the search features)."""
        self._other_monitors.append(monitor)

    def drift(self) -> tuple[dict[str, float], dict[str, bool]]:
        """PSI per feature, and which features are in alarm."""
        monitors = [m for m in (self._monitor, *self._other_monitors) if m is not None]
        psi: dict[str, float] = {}
        seen: dict[str, float] = {}
        for monitor in monitors:
            psi.update(monitor.psi())
            seen.update(monitor.observations())
        alarms = {
            name: value > self.drift_threshold and seen.get(name, 0) >= MIN_OBSERVATIONS_FOR_ALARM
            for name, value in psi.items()
        }
        firing = {name: round(psi[name], 3) for name, on in alarms.items() if on}
        now = time.monotonic()
        if firing and now - self._last_alarm_log > 60:
            self._last_alarm_log = now
            logger.warning(
                "drift alarm (PSI > %.2f) on index %s: %s", self.drift_threshold, self._monitor_version, firing
            )
        return psi, alarms


class OnlineCollector(Collector):
    """Prometheus view of an :class:`OnlineLoop` (computed at scrape time)."""

    def __init__(self, loop: OnlineLoop) -> None:
        self.loop = loop

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        psi, alarms = self.loop.drift()
        psi_family = GaugeMetricFamily(
            "sleuth_drift_psi",
            "Population stability index of live traffic vs the index's reference",
            labels=["feature"],
        )
        alert_family = GaugeMetricFamily(
            "sleuth_drift_alert",
            f"1 when the feature's PSI exceeds the threshold ({self.loop.drift_threshold})",
            labels=["feature"],
        )
        for name in sorted(psi):
            psi_family.add_metric([name], psi[name])
            alert_family.add_metric([name], 1.0 if alarms.get(name) else 0.0)
        yield psi_family
        yield alert_family
        arms = CounterMetricFamily(
            "sleuth_experiment_requests", "Searches assigned to each experiment arm", labels=["experiment", "arm"]
        )
        for (experiment, arm), count in sorted(self.loop.arm_counts().items()):
            arms.add_metric([experiment, arm], count)
        yield arms
