"""Drift of live traffic from an index's reference distributions, by population stability index.

At build time an index records, per feature, a histogram of what its own pseudo-queries (titles
or opening words of a fixed sample of its documents) produce: query length, top BM25 score, top
dense score and the dense score gap between ranks 1 and 2. The server keeps live counts over the
same bins; the population stability index

    PSI = sum_i (live_i - ref_i) * ln(live_i / ref_i)

(proportions per bin, floored at 1e-4) is 0 for identical distributions; by the usual rule of
thumb under 0.1 is stable, 0.1-0.25 a moderate shift and over 0.25 a major one (Yurdakul,
"Statistical properties of population stability index", 2018). Bins are the reference's deciles,
with open outer bins, so every bin holds about a tenth of the reference.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.types import Document, Hit

SEARCH_FEATURES = ("query_length", "top_bm25", "top_dense", "dense_gap")
REFERENCE_FILE = "drift_reference.json"
_FLOOR = 1e-4


@dataclass(frozen=True)
class Histogram:
    """Inner bin edges (bins are (-inf, e0], (e0, e1], ..., (e_last, inf)) and reference proportions."""

    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    @classmethod
    def from_values(cls, values: Sequence[float], bins: int = 10) -> Histogram:
        data = np.asarray(values, dtype=np.float64)
        if data.size == 0:
            raise ValueError("no reference values")
        edges = np.unique(np.quantile(data, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, data, side="left"), minlength=edges.size + 1)
        return cls(tuple(float(e) for e in edges), tuple(float(c) for c in counts / counts.sum()))

    def bin_of(self, value: float) -> int:
        return int(np.searchsorted(np.asarray(self.edges), value, side="left"))

    def psi(self, counts: Sequence[int]) -> float:
        total = float(sum(counts))
        if total == 0:
            return 0.0
        live = np.maximum(np.asarray(counts, dtype=np.float64) / total, _FLOOR)
        ref = np.maximum(np.asarray(self.proportions), _FLOOR)
        return float(np.sum((live - ref) * np.log(live / ref)))


def search_features(query: str, bm25_hits: Sequence[Hit] | None, dense_hits: Sequence[Hit]) -> dict[str, float]:
    """The drift features of one search (missing lists contribute no feature)."""
    features = {"query_length": float(len(query.split()))}
    if bm25_hits is not None:
        features["top_bm25"] = bm25_hits[0].score if bm25_hits else 0.0
    if dense_hits:
        features["top_dense"] = dense_hits[0].score
        features["dense_gap"] = dense_hits[0].score - dense_hits[1].score if len(dense_hits) > 1 else 0.0
    return features


def pseudo_queries(documents: Sequence[Document], n: int = 300, seed: int = 13) -> list[str]:
    """A deterministic sample of query-like strings from the corpus: titles, else opening words."""
    rng = random.Random(seed)
    sample = rng.sample(list(documents), min(n, len(documents)))
    queries = []
    for doc in sample:
        words = (doc.title or doc.text).split()
        queries.append(" ".join(words[: rng.randint(3, 12)]) or doc.doc_id)
    return queries


def write_reference(directory: Path, histograms: Mapping[str, Histogram]) -> None:
    payload = {name: {"edges": list(h.edges), "proportions": list(h.proportions)} for name, h in histograms.items()}
    (directory / REFERENCE_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def read_reference(directory: Path) -> dict[str, Histogram]:
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
        with self._lock:
            for name, value in features.items():
                histogram = self.reference.get(name)
                if histogram is None:
                    continue
                counts = self._counts[name]
                counts[histogram.bin_of(value)] += 1
                if counts.sum() >= self.window:
                    counts *= 0.5

    def observe_many(self, rows: Iterable[Mapping[str, float]]) -> None:
        for row in rows:
            self.observe(row)

    def psi(self) -> dict[str, float]:
        with self._lock:
            return {name: self.reference[name].psi(counts) for name, counts in self._counts.items()}

    def observations(self) -> dict[str, float]:
        with self._lock:
            return {name: float(counts.sum()) for name, counts in self._counts.items()}
