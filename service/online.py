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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from retrieval.drift import DriftMonitor
from retrieval.errors import InvalidRequestError
from retrieval.index import SearchIndex
from retrieval.pipeline import SearchRequest, SearchResult
from service.experiments import ExperimentSource
from service.generated.sleuth.v1 import search_pb2
from service.metrics import current_request_id

logger = logging.getLogger(__name__)

MAX_SESSION_ID = 128
MIN_OBSERVATIONS_FOR_ALARM = 50


@dataclass(frozen=True)
class Assignment:
    experiment: str = ""
    arm: str = ""


class OnlineLoop:
    """Experiment assignment and drift monitoring for one server. Thread-safe."""

    def __init__(self, experiments: ExperimentSource | None = None, drift_threshold: float = 0.25) -> None:
        self.experiments = experiments
        self.drift_threshold = drift_threshold
        self._lock = threading.Lock()
        self._monitor: DriftMonitor | None = None
        self._monitor_version: str | None = None
        self._arm_counts: dict[tuple[str, str], int] = {}
        self._last_alarm_log = 0.0

    # -- experiments --------------------------------------------------------------------------
    def apply(self, request: SearchRequest, session_id: str) -> tuple[SearchRequest, Assignment]:
        if len(session_id) > MAX_SESSION_ID:
            raise InvalidRequestError("session_id", f"is longer than {MAX_SESSION_ID} characters")
        experiment = self.experiments.current() if self.experiments is not None else None
        if experiment is None:
            return request, Assignment()
        arm = experiment.assign(session_id or None)
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
        return request, Assignment(experiment.name, arm)

    def annotate(self, response: search_pb2.SearchResponse, assignment: Assignment) -> search_pb2.SearchResponse:
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

    def drift(self) -> tuple[dict[str, float], dict[str, bool]]:
        """PSI per feature, and which features are in alarm."""
        monitor = self._monitor
        if monitor is None:
            return {}, {}
        psi = monitor.psi()
        seen = monitor.observations()
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
