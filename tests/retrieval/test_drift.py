from __future__ import annotations

import numpy as np
import pytest

from retrieval.drift import SEARCH_FEATURES, DriftMonitor, Histogram, pseudo_queries, search_features
from retrieval.index import SearchIndex


def test_histogram_bins_and_psi_known_cases() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 5000)
    hist = Histogram.from_values(reference)
    assert len(hist.proportions) == 10 and sum(hist.proportions) == pytest.approx(1.0)
    assert all(p == pytest.approx(0.1, abs=0.01) for p in hist.proportions)
    same = np.bincount([hist.bin_of(v) for v in rng.normal(0, 1, 5000)], minlength=10)
    shifted = np.bincount([hist.bin_of(v) for v in rng.normal(1.0, 1, 5000)], minlength=10)
    assert hist.psi(same) < 0.02
    assert hist.psi(shifted) > 0.25
    # PSI of an explicit two-bin case: ref (0.5, 0.5), live (0.8, 0.2).
    two = Histogram((0.0,), (0.5, 0.5))
    assert two.psi([8, 2]) == pytest.approx(0.3 * np.log(1.6) + (-0.3) * np.log(0.4))


def test_index_records_reference_distributions(tiny_index: SearchIndex) -> None:
    assert set(tiny_index.drift_reference) == set(SEARCH_FEATURES)
    assert "drift_reference.json" in tiny_index.manifest.files
    loaded = SearchIndex.load(tiny_index.path)
    assert loaded.drift_reference == tiny_index.drift_reference


def test_monitor_raises_psi_for_shifted_queries(tiny_index: SearchIndex, fake_encoder) -> None:
    def observe(monitor: DriftMonitor, queries: list[str]) -> None:
        for q in queries:
            bm25 = tiny_index.bm25.search(q, 2)
            dense = tiny_index.dense.search(fake_encoder.encode([q]), 2)[0]
            monitor.observe(search_features(q, bm25, dense))

    calm_monitor = DriftMonitor(tiny_index.drift_reference)
    observe(calm_monitor, pseudo_queries(tiny_index.documents) * 20)
    calm = calm_monitor.psi()
    assert max(calm.values()) < 0.1, calm

    shifted = DriftMonitor(tiny_index.drift_reference)
    observe(shifted, ["zzz qqq xyzzy plugh " * 8] * 100)  # long queries matching nothing
    drifted = shifted.psi()
    assert drifted["query_length"] > 0.25 and drifted["top_bm25"] > 0.25, drifted
