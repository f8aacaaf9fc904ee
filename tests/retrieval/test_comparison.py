from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from retrieval.comparison import (
    compare_counts,
    compare_runs,
    compare_values,
    minimum_detectable_effect,
    paired_bootstrap_ci,
    randomization_test,
)


def test_identical_systems_differ_by_zero_with_p_one() -> None:
    values = {str(i): float(i % 7) / 7 for i in range(80)}
    c = compare_values("ndcg@10", values, dict(values))
    assert (c.difference, c.ci_low, c.ci_high, c.p_value, c.mde) == (0.0, 0.0, 0.0, 1.0, 0.0)


def test_identical_runs_through_compare_runs() -> None:
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(30)}
    run = {f"q{i}": {f"d{i}": 1.0, "x": 2.0 if i % 2 else 0.5} for i in range(30)}
    for c in compare_runs(run, run, qrels):
        assert c.difference == 0.0 and c.p_value == 1.0 and c.units == 30


def test_one_improved_query_gives_the_expected_interval() -> None:
    n, gain = 50, 0.5
    a = {str(i): 0.5 for i in range(n)}
    b = dict(a)
    b["0"] = 1.0
    c = compare_values("m", a, b, resamples=20_000)
    assert c.difference == pytest.approx(gain / n)
    # A resample's mean difference is gain * (times unit 0 was drawn) / n, drawn ~ Binomial(n, 1/n).
    assert c.ci_low == 0.0
    assert c.ci_high == pytest.approx(gain * binom.ppf(0.975, n, 1 / n) / n)
    # One non-zero difference: flipping its sign gives the same |mean| every time -> p = 1.
    assert c.p_value == 1.0
    assert not c.significant


def test_a_consistent_improvement_is_significant_and_the_interval_covers_it() -> None:
    rng = np.random.default_rng(3)
    a = {str(i): float(v) for i, v in enumerate(rng.uniform(0.2, 0.8, 200))}
    b = {k: v + 0.05 + float(rng.normal(0, 0.05)) for k, v in a.items()}
    c = compare_values("m", a, b)
    assert c.ci_low < c.difference < c.ci_high
    assert 0.04 < c.difference < 0.06 and c.ci_low > 0
    assert c.p_value < 0.001
    assert c.mde == pytest.approx(
        2.8016 * np.std(list(np.subtract(list(b.values()), list(a.values()))), ddof=1) / np.sqrt(200), rel=1e-3
    )


def test_randomization_p_value_matches_exact_enumeration_on_small_sets() -> None:
    d = np.array([0.3, 0.1, -0.05, 0.2, 0.15])
    signs = np.array(np.meshgrid(*[[-1, 1]] * 5)).reshape(5, -1).T
    exact = np.mean(np.abs((signs * d).mean(axis=1)) >= abs(d.mean()) - 1e-12)
    assert randomization_test(d, permutations=50_000) == pytest.approx(exact, abs=0.01)


def test_bootstrap_and_mde_edge_cases() -> None:
    with pytest.raises(ValueError, match="no paired units"):
        paired_bootstrap_ci([])
    assert minimum_detectable_effect([0.1]) == float("inf")


def test_f1_comparison_on_document_counts() -> None:
    a = {f"doc{i}": (3, 1, 1) for i in range(40)}
    same = compare_counts("f1", a, dict(a))
    assert same.difference == 0.0 and same.p_value == 1.0
    better = {k: (4, 0, 0) for k in a}
    c = compare_counts("f1", a, better)
    assert c.mean_a == pytest.approx(0.75) and c.mean_b == pytest.approx(1.0)
    assert c.difference == pytest.approx(0.25) and c.ci_low == pytest.approx(0.25)
    assert c.p_value < 0.001
