"""Online experiments: a control and a candidate arm, with a share of traffic for the candidate.

Assignment is deterministic by a request key (user or session id): ``sha256(salt + key)`` mapped
to [0, 1) is compared with the candidate's share, so a user stays in one arm for the whole
experiment, and different experiments (different salts) split users independently. A request
without a key is assigned at random. The configuration is a JSON file re-read when it changes, so
changing the share or stopping the experiment needs no restart.

Example configuration::

    {"name": "rerank-canary", "candidate_share": 0.01,
     "control": {"rerank": false},
     "candidate": {"rerank": true, "fusion": {"method": "rrf"}}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.fusion import FusionConfig
from retrieval.pipeline import SEARCH_MODES

logger = logging.getLogger(__name__)

CONTROL = "control"
CANDIDATE = "candidate"


class ExperimentConfigError(ValueError):
    """The experiment file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class ArmSettings:
    """What an arm changes in a search request (unset fields leave the request as it is)."""

    rerank: bool | None = None
    fusion: dict[str, Any] = field(default_factory=dict)
    mode: str | None = None
    version: str | None = None  # a registry version to serve this arm (when the server holds it)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ArmSettings:
        if not isinstance(data, dict):
            raise ExperimentConfigError(f"{where}: must be an object")
        unknown = set(data) - {"rerank", "fusion", "mode", "version"}
        if unknown:
            raise ExperimentConfigError(f"{where}: unknown field(s) {sorted(unknown)}")
        rerank = data.get("rerank")
        if rerank is not None and not isinstance(rerank, bool):
            raise ExperimentConfigError(f"{where}.rerank: must be true or false")
        fusion = data.get("fusion", {})
        if not isinstance(fusion, dict):
            raise ExperimentConfigError(f"{where}.fusion: must be an object")
        try:
            FusionConfig(**fusion)
        except (TypeError, ValueError) as exc:
            raise ExperimentConfigError(f"{where}.fusion: {exc}") from exc
        mode = data.get("mode")
        if mode is not None and mode not in SEARCH_MODES:
            raise ExperimentConfigError(f"{where}.mode: must be one of {', '.join(SEARCH_MODES)}")
        return cls(rerank=rerank, fusion=dict(fusion), mode=mode, version=data.get("version"))


@dataclass(frozen=True)
class Experiment:
    name: str
    candidate_share: float
    control: ArmSettings = field(default_factory=ArmSettings)
    candidate: ArmSettings = field(default_factory=ArmSettings)
    salt: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ExperimentConfigError("name: must not be empty")
        if not (0.0 <= self.candidate_share <= 1.0):
            raise ExperimentConfigError(f"candidate_share: must be within [0, 1], got {self.candidate_share}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        try:
            share = float(data["candidate_share"])
            name = str(data["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExperimentConfigError(f"needs 'name' and a numeric 'candidate_share': {exc}") from exc
        return cls(
            name=name,
            candidate_share=share,
            control=ArmSettings.from_dict(data.get("control", {}), "control"),
            candidate=ArmSettings.from_dict(data.get("candidate", {}), "candidate"),
            salt=str(data.get("salt", name)),
        )

    def bucket(self, key: str) -> float:
        """The key's position in [0, 1) for this experiment (uniform over keys)."""
        digest = hashlib.sha256(f"{self.salt or self.name}\x00{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def assign(self, key: str | None, rng: random.Random | None = None) -> str:
        """The arm of a request: deterministic for a key, random without one."""
        position = self.bucket(key) if key else (rng or random).random()
        return CANDIDATE if position < self.candidate_share else CONTROL

    def settings(self, arm: str) -> ArmSettings:
        return self.candidate if arm == CANDIDATE else self.control


class ExperimentSource:
    """The current experiment from a JSON file, re-read when the file changes; None when absent.

    A malformed edit is logged and ignored: the previous experiment stays in force, so a typo in
    the file never stops traffic.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._experiment: Experiment | None = None
        if self.path is not None and self.path.exists():
            self._experiment = self._read()  # a bad file at start-up is an error, not a warning
            self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)  # type: ignore[arg-type]
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _read(self) -> Experiment:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ExperimentConfigError(f"{self.path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ExperimentConfigError(f"{self.path}: must be a JSON object")
        try:
            return Experiment.from_dict(data)
        except ExperimentConfigError as exc:
            raise ExperimentConfigError(f"{self.path}: {exc}") from exc

    def current(self) -> Experiment | None:
        if self.path is None:
            return None
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return self._experiment
        with self._lock:
            if stamp != self._stamp:
                if stamp is None:
                    logger.info("experiment file %s removed: experiment stopped", self.path)
                    self._experiment = None
                else:
                    try:
                        self._experiment = self._read()
                        logger.info("experiment now %s", self._experiment)
                    except ExperimentConfigError as exc:
                        logger.error("ignoring malformed experiment file: %s", exc)
                self._stamp = stamp
        return self._experiment
