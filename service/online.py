"""The online loop around each search: experiment arm assignment and drift observation."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

from retrieval.drift import DriftMonitor
from retrieval.pipeline import SearchRequest, SearchResult
from service.experiments import ExperimentSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assignment:
    experiment: str = ""
    arm: str = ""


class OnlineLoop:
    """Applies the running experiment to requests and feeds results to the drift monitor.

    ``drift_threshold`` is the PSI above which a feature is in alarm (logged once per minute at
    most, and exported as a gauge by the metrics module).
    """

    def __init__(
        self,
        experiments: ExperimentSource | None = None,
        drift: DriftMonitor | None = None,
        drift_threshold: float = 0.25,
    ) -> None:
        self.experiments = experiments
        self.drift = drift
        self.drift_threshold = drift_threshold
        self._last_alarm = 0.0
        self._lock = threading.Lock()

    def apply(self, request: SearchRequest, session_id: str) -> tuple[SearchRequest, Assignment]:
        experiment = self.experiments.current() if self.experiments is not None else None
        if experiment is None:
            return request, Assignment()
        arm = experiment.assign(session_id or None)
        settings = experiment.settings(arm)
        changes: dict[str, object] = {}
        if settings.rerank is not None:
            changes["rerank"] = settings.rerank
        if settings.mode is not None:
            changes["mode"] = settings.mode
        if settings.fusion:
            changes["fusion"] = dataclasses.replace(request.fusion, **settings.fusion)
        if changes:
            request = dataclasses.replace(request, **changes)
        return request, Assignment(experiment.name, arm)

    def observe(self, result: SearchResult) -> None:
        if self.drift is None or not result.drift_features:
            return
        self.drift.observe(result.drift_features)

    def drift_alarms(self) -> dict[str, float]:
        """Features whose PSI exceeds the threshold (after enough observations to mean anything)."""
        if self.drift is None:
            return {}
        seen = self.drift.observations()
        alarms = {
            name: value
            for name, value in self.drift.psi().items()
            if value > self.drift_threshold and seen.get(name, 0) >= 50
        }
        now = time.monotonic()
        if alarms and now - self._last_alarm > 60:
            with self._lock:
                self._last_alarm = now
            logger.warning("drift alarm: PSI above %.2f for %s", self.drift_threshold, alarms)
        return alarms
