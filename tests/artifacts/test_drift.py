"""The generic drift monitor: reference histograms, PSI, the reference file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from artifacts.drift import REFERENCE_FILE, DriftMonitor, Histogram, read_reference, write_reference


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


def test_reference_file_round_trips_and_a_missing_file_is_no_reference(tmp_path: Path) -> None:
    reference = {"a": Histogram((1.0, 2.0), (0.25, 0.5, 0.25)), "b": Histogram((), (1.0,))}
    write_reference(tmp_path, reference)
    assert (tmp_path / REFERENCE_FILE).is_file()
    assert read_reference(tmp_path) == reference
    assert read_reference(tmp_path / "elsewhere") == {}


def test_monitor_forgets_old_traffic_and_rebases() -> None:
    monitor = DriftMonitor({"x": Histogram((0.0,), (0.5, 0.5))}, window=10)
    for _ in range(9):
        monitor.observe({"x": 1.0, "unknown": 3.0})
    assert monitor.observations() == {"x": 9.0}
    monitor.observe({"x": 1.0})  # the tenth value halves the counts
    assert monitor.observations() == {"x": 5.0}
    assert monitor.psi()["x"] > 0.25  # everything in the upper bin
    monitor.rebase({"y": Histogram((), (1.0,))})
    assert monitor.observations() == {"y": 0.0}
