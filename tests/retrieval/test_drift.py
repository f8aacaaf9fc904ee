from __future__ import annotations

from artifacts.drift import DriftMonitor
from retrieval.drift import SEARCH_FEATURES, pseudo_queries, search_features
from retrieval.index import SearchIndex


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
