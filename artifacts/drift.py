"""Drift of live traffic from reference distributions, by population stability index.

The generic part of drift monitoring, shared by search (:mod:`retrieval.drift`), linking
(:mod:`linking.drift`) and the server: reference histograms, the monitor that counts live values
in their bins, and the reference file an artifact carries. Domain modules only say which features
they record and how to compute them.

At build time an artifact records, per feature, a histogram of values its own training or
reference data produce. The server keeps live counts over the same bins; the population stability
index

    PSI = sum_i (live_i - ref_i) * ln(live_i / ref_i)

(proportions per bin, floored at 1e-4) is 0 for identical distributions; by the usual rule of
thumb under 0.1 is stable, 0.1-0.25 a moderate shift and over 0.25 a major one (Yurdakul,
"Statistical properties of population stability index", 2018). Bins are the reference's deciles,
with open outer bins, so every bin holds about a tenth of the reference.

Example:
    >>> reference = {"length": Histogram.from_values([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])}
    >>> monitor = DriftMonitor(reference)
    >>> for value in range(1, 11):  # live traffic like the reference
    ...     monitor.observe({"length": value})
    >>> round(monitor.psi()["length"], 3)
    0.0
    >>> for value in [10] * 30:  # then only long ones
    ...     monitor.observe({"length": value})
    >>> monitor.psi()["length"] > 0.25
    True
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_FILE = "drift_reference.json"
_FLOOR = 1e-4


@dataclass(frozen=True)
class Histogram:
    """Inner bin edges (bins are (-inf, e0], (e0, e1], ..., (e_last, inf)) and reference proportions."""

    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    @classmethod
    def from_values(cls, values: Sequence[float], bins: int = 10) -> Histogram:
        """The reference histogram of ``values``: decile edges (fewer when values repeat)."""
        data = np.asarray(values, dtype=np.float64)
        if data.size == 0:
            raise ValueError("no reference values")
        edges = np.unique(np.quantile(data, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, data, side="left"), minlength=edges.size + 1)
        return cls(tuple(float(e) for e in edges), tuple(float(c) for c in counts / counts.sum()))

    def bin_of(self, value: float) -> int:
        """The index of the bin ``value`` falls in."""
        return int(np.searchsorted(np.asarray(self.edges), value, side="left"))

    def psi(self, counts: Sequence[float] | np.ndarray) -> float:
        """The population stability index of live ``counts`` (one per bin) against this reference."""
        total = float(np.sum(counts))
        if total == 0:
            return 0.0
        live = np.maximum(np.asarray(counts, dtype=np.float64) / total, _FLOOR)
        ref = np.maximum(np.asarray(self.proportions), _FLOOR)
        return float(np.sum((live - ref) * np.log(live / ref)))


def write_reference(directory: Path, histograms: Mapping[str, Histogram]) -> None:
    """Write ``histograms`` to ``directory``'s :data:`REFERENCE_FILE`."""
    payload = {name: {"edges": list(h.edges), "proportions": list(h.proportions)} for name, h in histograms.items()}
    (directory / REFERENCE_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_reference(directory: Path) -> dict[str, Histogram]:
    """The histograms in ``directory``'s :data:`REFERENCE_FILE` (none if it has no such file)."""
    path = directory / REFERENCE_FILE
    if not path.is_file():
        return {}
    payload = json.loads(path.read_text())
    return {name: Histogram(tuple(v["edges"]), tuple(v["proportions"])) for name, v in payload.items()}


class DriftMonitor:
    """Live bin counts per feature against reference histograms. Thread-safe.

    ``window`` bounds memory and keeps the PSI about recent traffic: when a feature has seen
    ``window`` values, its counts are halved (an exponential forgetting of old traffic).
    """

    def __init__(self, reference: Mapping[str, Histogram], window: int = 10_000) -> None:
        self.reference = dict(reference)
        self.window = window
        self._counts = {name: np.zeros(len(h.proportions), dtype=np.float64) for name, h in self.reference.items()}
        self._lock = threading.Lock()

    def rebase(self, reference: Mapping[str, Histogram]) -> None:
        """Compare against ``reference`` from now on (a new model version's), forgetting what was counted."""
        with self._lock:
            self.reference = dict(reference)
            self._counts = {name: np.zeros(len(h.proportions), dtype=np.float64) for name, h in self.reference.items()}

    def observe(self, features: Mapping[str, float]) -> None:
        """Count one observation's features (features without a reference are ignored)."""
        with self._lock:
            for name, value in features.items():
                histogram = self.reference.get(name)
                if histogram is None:
                    continue
                counts = self._counts[name]
                counts[histogram.bin_of(value)] += 1
                if counts.sum() >= self.window:
                    counts *= 0.5

    def psi(self) -> dict[str, float]:
        """The PSI of each feature's live counts against its reference."""
        with self._lock:
            return {name: self.reference[name].psi(counts) for name, counts in self._counts.items()}

    def observations(self) -> dict[str, float]:
        """How many observations (after forgetting) each feature's PSI rests on."""
        with self._lock:
            return {name: float(counts.sum()) for name, counts in self._counts.items()}
