"""Offline evaluation of rankings against relevance judgments, with trec_eval's semantics.

Metric definitions follow trec_eval 9 (as exposed by pytrec_eval), so numbers are comparable
with published ones; a test checks equality with pytrec_eval to 1e-6:

* Ranking order: by score descending, ties broken by document id *descending* (trec_eval's
  ``comp_sim_docno``), whatever order the run lists them in.
* A document is relevant when its judgment is >= 1; unjudged documents count as non-relevant.
* ``ndcg@k`` (trec_eval ``ndcg_cut_k``): gain = judgment value, discount ``log2(rank + 1)``;
  the ideal ranking sorts all judged documents of the query by gain.
* ``recall@k`` (``recall_k``): relevant retrieved in the top k / all relevant.
* ``mrr@k``: ``recip_rank`` computed on the ranking cut at k (1 / rank of the first relevant).
* ``map@k`` (``map_cut_k``): sum over relevant documents in the top k of precision at their
  rank, divided by the number of relevant documents (all of them, not only those within k).

Means are taken over every judged query with at least one relevant document; a judged query that
the run does not answer scores 0 (like ``trec_eval -c``). Such queries are usually a mistake (a
queries file that lacks ids the qrels judge, or another split's qrels), so the report lists them
(``missing_queries``) for the caller to warn about. Judged queries without a relevant document
are left out of the means, whether the run answers them or not (trec_eval's ``-c`` does the same).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.corpus import Qrels, numbered_lines
from retrieval.errors import DataFormatError

Run = dict[str, dict[str, float]]
"""qid -> doc id -> score."""

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")
_METRIC = re.compile(r"^(ndcg|recall|mrr|map|precision)@(\d+)$")


@dataclass(frozen=True)
class EvaluationReport:
    """Mean metrics over ``queries`` judged queries, and the per-query values behind them.

    ``missing_queries``: the judged queries (with a relevant document) that the run has no entry
    for, sorted. They are counted in ``queries`` and score 0 on every metric (trec_eval's ``-c``
    semantics, so the numbers stay comparable); a query the run holds with no hits is answered,
    not missing.
    """

    means: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)
    queries: int
    missing_queries: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, float | int]:
        """The means, the query count and how many of those queries the run did not answer."""
        return {**self.means, "queries": self.queries, "missing_queries": len(self.missing_queries)}

    def missing_warning(self, *, shown: int = 5) -> str | None:
        """A one-line warning about ``missing_queries`` (None when there are none), naming the first few.

        Example:
            >>> evaluate_run({"q1": {"a": 1.0}}, {"q1": {"a": 1}, "q2": {"b": 1}}, ["mrr@10"]).missing_warning()
            '1 of 2 judged queries have no results in the run and score 0: q2'
        """
        missing = self.missing_queries
        if not missing:
            return None
        more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
        return (
            f"{len(missing)} of {self.queries} judged queries have no results in the run and score 0: "
            f"{', '.join(missing[:shown])}{more}"
        )


def ranked_doc_ids(scores: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval order: score descending, then doc id descending."""
    return [doc for doc, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def _parse_metric(name: str) -> tuple[str, int]:
    match = _METRIC.match(name)
    if not match:
        raise ValueError(f"unknown metric {name!r}; use ndcg@k, recall@k, mrr@k, map@k or precision@k")
    return match.group(1), int(match.group(2))


def _dcg(gains: Iterable[float]) -> float:
    return sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, start=1))


def query_metric(name: str, ranking: list[str], judgments: Mapping[str, int]) -> float:
    """One metric for one query, given its ranking (best first) and its judgments."""
    kind, k = _parse_metric(name)
    top = ranking[:k]
    relevant = {doc for doc, rel in judgments.items() if rel >= 1}
    if not relevant:
        return 0.0
    if kind == "ndcg":
        ideal = sorted((max(rel, 0) for rel in judgments.values()), reverse=True)[:k]
        idcg = _dcg(ideal)
        return _dcg(max(judgments.get(doc, 0), 0) for doc in top) / idcg if idcg > 0 else 0.0
    if kind == "recall":
        return sum(doc in relevant for doc in top) / len(relevant)
    if kind == "precision":
        return sum(doc in relevant for doc in top) / k
    if kind == "mrr":
        return next((1.0 / rank for rank, doc in enumerate(top, start=1) if doc in relevant), 0.0)
    # map
    hits, total = 0, 0.0
    for rank, doc in enumerate(top, start=1):
        if doc in relevant:
            hits += 1
            total += hits / rank
    return total / len(relevant)


def evaluate_run(run: Run, qrels: Qrels, metrics: Iterable[str] = DEFAULT_METRICS) -> EvaluationReport:
    """Score ``run`` against ``qrels``: per-query values and their means.

    Every judged query with a relevant document counts; one that ``run`` has no entry for scores 0
    and is listed in the report's ``missing_queries``.

    Example:
        >>> evaluate_run({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, ["mrr@10"]).means
        {'mrr@10': 0.5}
    """
    metrics = list(metrics)
    for name in metrics:
        _parse_metric(name)
    per_query: dict[str, dict[str, float]] = {}
    missing: list[str] = []
    for qid, judgments in qrels.items():
        if not any(rel >= 1 for rel in judgments.values()):
            continue
        if qid not in run:
            missing.append(qid)
        ranking = ranked_doc_ids(run.get(qid, {}))
        per_query[qid] = {name: query_metric(name, ranking, judgments) for name in metrics}
    count = len(per_query)
    means = {name: (sum(v[name] for v in per_query.values()) / count if count else 0.0) for name in metrics}
    return EvaluationReport(means=means, per_query=per_query, queries=count, missing_queries=tuple(sorted(missing)))


def write_trec_run(path: str | Path, run: Run, tag: str = "sleuth") -> None:
    """Write a TREC run file: ``qid Q0 docid rank score tag``, in trec_eval order."""
    with open(path, "w", encoding="utf-8") as handle:
        for qid in sorted(run):
            for rank, doc in enumerate(ranked_doc_ids(run[qid]), start=1):
                handle.write(f"{qid} Q0 {doc} {rank} {run[qid][doc]:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> Run:
    """Read a TREC run file (six whitespace-separated columns)."""
    run: Run = {}
    path = Path(path)
    for lineno, line in numbered_lines(path, "run file"):
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(f"{path}:{lineno}: expected 6 columns (qid Q0 docid rank score tag)")
        try:
            score = float(parts[4])
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
        run.setdefault(parts[0], {})[parts[2]] = score
    return run
