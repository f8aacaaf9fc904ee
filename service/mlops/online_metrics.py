"""Online metrics from the feedback log, per experiment arm, with 95% confidence intervals.

Per arm, over searches (a request id with impressions):

* CTR: share of searches with at least one click (Wilson score interval);
* zero-click rate: 1 - CTR (Wilson interval);
* MRR of clicks: mean over searches of 1 / position of the first click, 0 without a click
  (bootstrap percentile interval);
* successful-session rate: share of sessions (session id, or the request id without one) with a
  click whose dwell time reaches the threshold (Wilson interval).

And :func:`clicks_to_judgments` turns the log into graded judgments for training, correcting
position bias with inverse propensity weights (Joachims, Swaminathan & Schnabel, "Unbiased
Learning-to-Rank with Biased Feedback", WSDM 2017): a click at position p counts 1 / P(examined | p)
with the position-based propensity ``P(examined | p) = (1 / p) ** eta``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm

from service.mlops.feedback import FeedbackEvent


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class ArmReport:
    arm: str
    searches: int
    sessions: int
    ctr: Estimate
    zero_click_rate: Estimate
    mrr: Estimate
    successful_session_rate: Estimate

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"arm": self.arm, "searches": self.searches, "sessions": self.sessions}
        for name in ("ctr", "zero_click_rate", "mrr", "successful_session_rate"):
            e: Estimate = getattr(self, name)
            out[name] = {"value": e.value, "ci95": [e.low, e.high]}
        return out


def wilson(successes: int, n: int, confidence: float = 0.95) -> Estimate:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return Estimate(0.0, 0.0, 1.0)
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_mean(values: list[float], resamples: int = 5000, seed: int = 0) -> Estimate:
    if not values:
        return Estimate(0.0, 0.0, 0.0)
    data = np.asarray(values)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(data.mean()), float(low), float(high))


@dataclass
class _Search:
    arm: str = ""
    session: str = ""
    query: str | None = None
    shown: dict[str, int] = field(default_factory=dict)
    clicks: list[tuple[str, int]] = field(default_factory=list)
    dwell: dict[str, int] = field(default_factory=dict)


def _searches(events: Iterable[FeedbackEvent]) -> dict[str, _Search]:
    searches: dict[str, _Search] = defaultdict(_Search)
    for e in events:
        s = searches[e.request_id]
        s.arm = s.arm or e.arm
        s.session = s.session or e.session_id
        if e.kind == "impression":
            s.query = s.query or e.query
            if e.doc_id is not None and e.position is not None:
                s.shown[e.doc_id] = e.position
        elif e.kind == "click" and e.doc_id is not None and e.position is not None:
            s.clicks.append((e.doc_id, e.position))
        if e.dwell_ms is not None and e.doc_id is not None:
            s.dwell[e.doc_id] = max(s.dwell.get(e.doc_id, 0), e.dwell_ms)
    return searches


def online_report(events: Iterable[FeedbackEvent], dwell_threshold_ms: int = 30_000) -> list[ArmReport]:
    """Per-arm online metrics; only requests with an impression count as searches."""
    by_arm: dict[str, list[_Search]] = defaultdict(list)
    for request_id, s in _searches(events).items():
        if s.query is not None or s.shown:
            s.session = s.session or request_id
            by_arm[s.arm or "default"].append(s)
    reports = []
    for arm in sorted(by_arm):
        searches = by_arm[arm]
        clicked = sum(bool(s.clicks) for s in searches)
        rr = [1.0 / min(p for _, p in s.clicks) if s.clicks else 0.0 for s in searches]
        sessions: dict[str, bool] = {}
        for s in searches:
            success = any(s.dwell.get(doc, 0) >= dwell_threshold_ms for doc, _ in s.clicks)
            sessions[s.session] = sessions.get(s.session, False) or success
        ctr = wilson(clicked, len(searches))
        zero = wilson(len(searches) - clicked, len(searches))
        reports.append(
            ArmReport(
                arm=arm,
                searches=len(searches),
                sessions=len(sessions),
                ctr=ctr,
                zero_click_rate=zero,
                mrr=bootstrap_mean(rr),
                successful_session_rate=wilson(sum(sessions.values()), len(sessions)),
            )
        )
    return reports


@dataclass(frozen=True)
class ArmDifference:
    """Candidate minus control on one per-search metric, with a 95% normal-approximation interval."""

    metric: str
    difference: float
    low: float
    high: float
    mde: float  # smallest true difference detected with 80% power at 5% significance, at these sizes

    @property
    def detected(self) -> bool:
        return self.low > 0 or self.high < 0


def arm_differences(
    events: Iterable[FeedbackEvent], control: str = "control", candidate: str = "candidate"
) -> list[ArmDifference]:
    """Differences in CTR, zero-click rate and click MRR between two arms (per-search values,
    unpooled variance: ``d +- 1.96 * sqrt(var_a / n_a + var_b / n_b)``)."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in _searches(events).values():
        if s.query is None and not s.shown:
            continue
        first = min((p for _, p in s.clicks), default=0)
        arm_values = values[s.arm or "default"]
        arm_values["ctr"].append(1.0 if s.clicks else 0.0)
        arm_values["zero_click_rate"].append(0.0 if s.clicks else 1.0)
        arm_values["mrr"].append(1.0 / first if first else 0.0)
    if control not in values or candidate not in values:
        return []
    z = float(norm.ppf(0.975))
    out = []
    for metric in ("ctr", "zero_click_rate", "mrr"):
        a, b = np.asarray(values[control][metric]), np.asarray(values[candidate][metric])
        diff = float(b.mean() - a.mean())
        se = float(np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)) if min(a.size, b.size) > 1 else np.inf
        out.append(ArmDifference(metric, diff, diff - z * se, diff + z * se, (z + float(norm.ppf(0.8))) * se))
    return out


@dataclass(frozen=True)
class ClickJudgment:
    qid: str
    query: str
    doc_id: str
    relevance: int
    weighted_ctr: float
    impressions: int


def query_id(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:16]


def clicks_to_judgments(
    events: Iterable[FeedbackEvent],
    *,
    eta: float = 1.0,
    threshold: float = 0.5,
    min_impressions: int = 1,
) -> list[ClickJudgment]:
    """Graded judgments from clicks, debiased by inverse propensity weights.

    For each (query, document) shown at least ``min_impressions`` times, the weighted CTR is
    ``sum over clicks of 1 / (1/position)**eta`` divided by impressions. Relevance is 2 at
    ``2 * threshold`` or more, 1 at ``threshold`` or more, else 0 (shown, not clicked enough).
    """
    weighted: dict[tuple[str, str], float] = defaultdict(float)
    shown: dict[tuple[str, str], int] = defaultdict(int)
    texts: dict[str, str] = {}
    for s in _searches(events).values():
        if s.query is None:
            continue
        qid = query_id(s.query)
        texts.setdefault(qid, " ".join(s.query.split()))
        for doc in s.shown:
            shown[(qid, doc)] += 1
        for doc, position in s.clicks:
            weighted[(qid, doc)] += position**eta
    judgments = []
    for (qid, doc), impressions in sorted(shown.items()):
        if impressions < min_impressions:
            continue
        ctr = weighted.get((qid, doc), 0.0) / impressions
        relevance = 2 if ctr >= 2 * threshold else 1 if ctr >= threshold else 0
        judgments.append(ClickJudgment(qid, texts[qid], doc, relevance, ctr, impressions))
    return judgments
