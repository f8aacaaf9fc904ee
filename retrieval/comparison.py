"""How precisely a change was measured: paired comparisons of two systems on the same units.

A unit is a query (search) or a document (linking). For each metric we report the mean
difference B - A with

* a 95% **paired bootstrap** confidence interval (percentile method; Efron & Tibshirani 1993;
  its use for IR evaluation: Sakai, "Evaluating evaluation metrics based on the bootstrap", SIGIR
  2006): units are resampled with replacement, keeping each unit's A and B values together;
* a two-sided **paired randomization test** p-value (Fisher's sign-flipping test; Smucker, Allan &
  Carterette, "A comparison of statistical significance tests for IR evaluation", CIKM 2007): under
  the null hypothesis A and B are exchangeable within a unit, so each unit's difference keeps or
  flips its sign at random; p = (1 + #{|permuted mean| >= |observed mean|}) / (1 + permutations),
  except that p = 1 exactly when every difference is zero;
* the **minimum detectable effect** at 5% significance and 80% power for this many units and this
  spread of paired differences: MDE = (z_0.975 + z_0.8) * sd(d) / sqrt(n) (normal approximation).

For ratio metrics such as micro-F1, which are not means over units, the same resampling is applied
to per-unit counts (tp, fp, fn) and the statistic is recomputed on their sums.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from retrieval.corpus import Qrels
from retrieval.evaluation import DEFAULT_METRICS, Run, evaluate_run

Statistic = Callable[[np.ndarray], np.ndarray]
"""Maps unit values of shape (resamples, units, ...) to one statistic per resample."""


@dataclass(frozen=True)
class MetricComparison:
    """B versus A on one metric."""

    metric: str
    units: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    mde: float
    per_unit_difference: dict[str, float] = field(repr=False, default_factory=dict)

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "metric": self.metric,
            "units": self.units,
            "a": self.mean_a,
            "b": self.mean_b,
            "difference": self.difference,
            "ci95_low": self.ci_low,
            "ci95_high": self.ci_high,
            "p_value": self.p_value,
            "mde": self.mde,
        }


def shared_units(metric: str, a: Mapping[str, object], b: Mapping[str, object]) -> list[str]:
    """The units both systems were scored on, sorted; none in common is an error."""
    units = sorted(set(a) & set(b))
    if not units:
        raise ValueError(f"{metric}: the two systems share no unit")
    return units


def paired_bootstrap_ci(
    differences: Sequence[float], *, resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean paired difference."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired units to compare")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def randomization_test(differences: Sequence[float], *, permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip randomization test on the mean difference."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no paired units to compare")
    if not np.any(d):
        return 1.0
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(permutations, d.size))
    permuted = np.abs((signs * d).mean(axis=1))
    # A small tolerance so that ties in floating point count as "as extreme".
    extreme = int(np.count_nonzero(permuted >= observed - 1e-12))
    return (1 + extreme) / (1 + permutations)


def minimum_detectable_effect(differences: Sequence[float], *, alpha: float = 0.05, power: float = 0.8) -> float:
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return float("inf")
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * d.std(ddof=1) / np.sqrt(d.size))


def compare_values(
    metric: str,
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> MetricComparison:
    """Compare per-unit values of one metric (units present in both)."""
    units = shared_units(metric, a, b)
    va = np.array([a[u] for u in units])
    vb = np.array([b[u] for u in units])
    d = vb - va
    low, high = paired_bootstrap_ci(d, resamples=resamples, seed=seed)
    return MetricComparison(
        metric=metric,
        units=len(units),
        mean_a=float(va.mean()),
        mean_b=float(vb.mean()),
        difference=float(d.mean()),
        ci_low=low,
        ci_high=high,
        p_value=randomization_test(d, permutations=resamples, seed=seed),
        mde=minimum_detectable_effect(d),
        per_unit_difference=dict(zip(units, d.tolist(), strict=True)),
    )


def compare_runs(
    run_a: Run,
    run_b: Run,
    qrels: Qrels,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    resamples: int = 10_000,
    seed: int = 0,
) -> list[MetricComparison]:
    """Compare two search runs on the judged queries, metric by metric.

    Example:
        >>> qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
        >>> a = {"q1": {"d1": 1.0}, "q2": {"d9": 1.0}}
        >>> [c.difference for c in compare_runs(a, a, qrels, ["mrr@10"])]
        [0.0]
    """
    report_a = evaluate_run(run_a, qrels, metrics)
    report_b = evaluate_run(run_b, qrels, metrics)
    return [
        compare_values(
            metric,
            {q: v[metric] for q, v in report_a.per_query.items()},
            {q: v[metric] for q, v in report_b.per_query.items()},
            resamples=resamples,
            seed=seed,
        )
        for metric in metrics
    ]


def micro_f1(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from summed (tp, fp, fn) counts; ``counts`` has shape (..., units, 3)."""
    tp, fp, fn = (counts[..., i].sum(axis=-1) for i in range(3))
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp, dtype=np.float64), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp, dtype=np.float64), where=(tp + fn) > 0)
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def compare_counts(
    metric: str,
    a: Mapping[str, tuple[int, int, int]],
    b: Mapping[str, tuple[int, int, int]],
    *,
    statistic: Statistic = micro_f1,
    resamples: int = 10_000,
    seed: int = 0,
) -> MetricComparison:
    """Compare a ratio statistic (default micro-F1) computed from per-unit (tp, fp, fn) counts."""
    units = shared_units(metric, a, b)
    ca = np.array([a[u] for u in units], dtype=np.float64)
    cb = np.array([b[u] for u in units], dtype=np.float64)
    fa, fb = float(statistic(ca)), float(statistic(cb))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(units), size=(resamples, len(units)))
    boot = statistic(cb[idx]) - statistic(ca[idx])
    low, high = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    if np.array_equal(ca, cb):
        p_value = 1.0
    else:
        swap = rng.random((resamples, len(units)))[..., None] < 0.5
        perm = np.abs(statistic(np.where(swap, ca, cb)) - statistic(np.where(swap, cb, ca)))
        p_value = (1 + int(np.count_nonzero(perm >= abs(fb - fa) - 1e-12))) / (1 + resamples)
    per_unit_a, per_unit_b = statistic(ca[:, None, :]), statistic(cb[:, None, :])
    per_unit = per_unit_b - per_unit_a
    # The MDE of a ratio statistic, from the bootstrap spread: (z_.975 + z_.8) * se.
    mde = float((norm.ppf(0.975) + norm.ppf(0.8)) * boot.std(ddof=1))
    return MetricComparison(
        metric=metric,
        units=len(units),
        mean_a=fa,
        mean_b=fb,
        difference=fb - fa,
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        mde=mde,
        per_unit_difference=dict(zip(units, per_unit.tolist(), strict=True)),
    )
