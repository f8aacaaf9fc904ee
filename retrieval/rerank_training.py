"""Training a learned reranker from relevance judgments, with a held-out validation split.

Steps: retrieve the fused candidates of every judged training query (the same hybrid pipeline
that serves) and compute their features; split the queries into ``folds`` parts by a hash of the
query id (stable across runs and machines); for each part, fit a model on the other parts and
validate it on that one (LambdaMART stops early there); the served LambdaMART is the bag of the
fold models (logistic regression is refitted on all queries). The weight of the fused ranking in
the final score is chosen on the out-of-fold predictions, so every training query serves once as
validation. The model directory is written atomically with its manifest.

Example:
    >>> result = train_reranker(index, encoder, "queries.jsonl", "qrels/train.tsv", "models/rr")  # doctest: +SKIP
    >>> result.metrics["valid"]["rerank_ndcg@10"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import Manifest, checksum_files, code_version, library_versions, sha256_file, staged_directory, utc_now
from retrieval.corpus import Qrels, load_qrels, load_queries
from retrieval.dense import Encoder
from retrieval.evaluation import evaluate_run
from retrieval.fusion import FusionConfig
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher, SearchRequest
from retrieval.rerank import (
    FORMAT_VERSION,
    KIND,
    MODEL_TYPES,
    LambdaMartModel,
    LambdaMartParams,
    LearnedReranker,
    LogisticModel,
    LogRegParams,
    RankingModel,
    mix_with_prior,
    query_terms,
)
from retrieval.rerank_features import FEATURE_NAMES, RELATIVE_GROUPS, candidate_features, features_of_groups
from retrieval.types import Query

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CandidateSet:
    """One query's fused candidates (best first), their features and their judgments."""

    qid: str
    doc_ids: tuple[str, ...]
    features: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    query_terms: int | None = None

    @property
    def fused_ranks(self) -> np.ndarray:
        return np.arange(1, len(self.doc_ids) + 1, dtype=np.float64)


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides the trained model besides the data.

    ``prior_weights`` are the candidate weights of the fused ranking in the final score, chosen on
    the validation queries by the one-standard-error rule (see :func:`choose_prior_weight`;
    ``prior_se_multiple`` standard errors, or at least ``prior_tolerance`` NDCG@10).
    ``support_quantile`` sets the model's query-length support: queries with more distinct terms
    than that quantile of the training queries keep the fused order (``None``, the default: no limit;
    on SciFact train a model fitted on short queries improves unseen longer ones, see
    ``scripts/guard_study.py`` and docs/models/reranker.md, so the guard is off unless asked for).
    """

    model_type: str = "lambdamart"
    features: tuple[str, ...] = features_of_groups(RELATIVE_GROUPS)
    lambdamart: LambdaMartParams = field(default_factory=LambdaMartParams)
    logreg: LogRegParams = field(default_factory=LogRegParams)
    folds: int = 5
    split_salt: str = "sleuth-rerank"
    depth: int = 100
    fusion: FusionConfig = field(default_factory=FusionConfig)
    prior_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    prior_se_multiple: float = 1.0
    prior_tolerance: float = 0.002
    support_quantile: float | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}")
        unknown = [name for name in self.features if name not in FEATURE_NAMES]
        if unknown or not self.features:
            raise ValueError(f"unknown or no features {unknown}; choose from {FEATURE_NAMES}")
        if not (2 <= self.folds <= 20):
            raise ValueError(f"folds must be within [2, 20], got {self.folds}")
        if not self.prior_weights:
            raise ValueError("prior_weights must not be empty")
        if self.support_quantile is not None and not (0.5 <= self.support_quantile <= 1.0):
            raise ValueError(f"support_quantile must be within [0.5, 1] or None, got {self.support_quantile}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "features": list(self.features),
            "model_params": (self.lambdamart if self.model_type == "lambdamart" else self.logreg).to_dict(),
            "folds": self.folds,
            "split_salt": self.split_salt,
            "depth": self.depth,
            "fusion": self.fusion.to_dict(),
            "prior_weights": list(self.prior_weights),
            "prior_se_multiple": self.prior_se_multiple,
            "prior_tolerance": self.prior_tolerance,
            "support_quantile": self.support_quantile,
        }


@dataclass(frozen=True)
class TrainingResult:
    reranker: LearnedReranker
    manifest: Manifest
    path: Path
    metrics: dict[str, Any]


def fold_of(qid: str, folds: int, salt: str = "sleuth-rerank") -> int:
    """Deterministic fold of a query: the hash of (salt, qid) modulo ``folds``."""
    digest = hashlib.sha256(f"{salt}\0{qid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % folds


def collect_candidates(
    index: SearchIndex,
    encoder: Encoder,
    queries: Sequence[Query],
    qrels: Qrels,
    *,
    depth: int = 100,
    fusion: FusionConfig | None = None,
) -> list[CandidateSet]:
    """Fused candidates and features of every query that has judgments (queries encoded in one batch)."""
    judged = [q for q in queries if q.qid in qrels]
    if not judged:
        raise ValueError("no query has judgments in the qrels")
    searcher = Searcher(index, encoder)
    vectors = searcher.encode_queries([q.text for q in judged])
    fusion = fusion or FusionConfig()
    sets = []
    for query, vector in zip(judged, vectors, strict=True):
        result = searcher.run(SearchRequest(query.text, top_k=depth, fusion=fusion), vector)
        features = candidate_features(query.text, result.hits, index, vector)
        judgments = qrels[query.qid]
        labels = np.array([max(judgments.get(h.doc_id, 0), 0) for h in result.hits], dtype=np.int32)
        doc_ids = tuple(h.doc_id for h in result.hits)
        sets.append(CandidateSet(query.qid, doc_ids, features, labels, query_terms(index, query.text)))
    return sets


def per_query_ndcg_at_10(sets: Sequence[CandidateSet], scores: Sequence[np.ndarray], qrels: Qrels) -> np.ndarray:
    """NDCG@10 of each candidate list ordered by ``scores`` (judged documents outside the
    candidates still count in the ideal ranking), in the order of ``sets``."""
    run = {s.qid: dict(zip(s.doc_ids, map(float, sc), strict=True)) for s, sc in zip(sets, scores, strict=True)}
    report = evaluate_run(run, {s.qid: qrels[s.qid] for s in sets}, ["ndcg@10"])
    return np.array([report.per_query.get(s.qid, {"ndcg@10": 0.0})["ndcg@10"] for s in sets], dtype=np.float64)


def ndcg_at_10(sets: Sequence[CandidateSet], scores: Sequence[np.ndarray], qrels: Qrels) -> float:
    """Mean NDCG@10 over the queries of ``sets`` with at least one relevant judgment."""
    run = {s.qid: dict(zip(s.doc_ids, map(float, sc), strict=True)) for s, sc in zip(sets, scores, strict=True)}
    return evaluate_run(run, {s.qid: qrels[s.qid] for s in sets}, ["ndcg@10"]).means["ndcg@10"]


def _stack(sets: Sequence[CandidateSet], columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nonempty = [s for s in sets if s.doc_ids]
    x = np.vstack([s.features[:, columns] for s in nonempty])
    y = np.concatenate([s.labels for s in nonempty])
    groups = np.array([len(s.doc_ids) for s in nonempty], dtype=np.int64)
    return x, y, groups


def fit_model(
    config: TrainingConfig, fit_sets: Sequence[CandidateSet], valid_sets: Sequence[CandidateSet]
) -> RankingModel:
    """Fit the configured model on ``fit_sets`` (LambdaMART stops early on ``valid_sets``)."""
    columns = np.array([FEATURE_NAMES.index(name) for name in config.features])
    train = _stack(fit_sets, columns)
    if not np.any(train[1] > 0):
        raise ValueError("no relevant document among the training candidates: nothing to learn from")
    if config.model_type == "lambdamart":
        valid = _stack(valid_sets, columns) if valid_sets else None
        return LambdaMartModel.fit(train, valid, config.features, config.lambdamart, threads=config.threads)
    return LogisticModel.fit(train[0], train[1], config.features, config.logreg)


def choose_prior_weight(
    raw_scores: Sequence[np.ndarray], sets: Sequence[CandidateSet], qrels: Qrels, config: TrainingConfig
) -> tuple[float, dict[str, float]]:
    """Choose the weight of the fused ranking by the one-standard-error rule on validation queries.

    ``raw_scores`` are a model's scores of the candidates of ``sets``, which it was not trained on.
    The weight with the best mean NDCG@10 is found first; then the largest (most conservative)
    weight whose per-query NDCG@10 is worse than the best by less than one standard error of the
    paired differences is chosen (Hastie, Tibshirani & Friedman, ESL 7.10: prefer the simpler model
    that the data cannot tell apart from the best). In-domain validation always favours trusting
    the model; the rule keeps the reranker close to its input unless the data clearly say otherwise,
    which is what protects corpora it never saw. Returns the weight and each weight's mean.
    """
    raw = list(raw_scores)
    valid_sets = list(sets)
    per_query = {
        w: per_query_ndcg_at_10(
            valid_sets, [mix_with_prior(r, s.fused_ranks, w) for r, s in zip(raw, valid_sets, strict=True)], qrels
        )
        for w in config.prior_weights
    }
    best = max(per_query, key=lambda w: (per_query[w].mean(), w))
    chosen = best
    for w in sorted(per_query):
        if w <= best:
            continue
        diff = per_query[best] - per_query[w]
        stderr = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        if diff.mean() <= max(stderr * config.prior_se_multiple, config.prior_tolerance):
            chosen = w
    return chosen, {f"{w:g}": round(float(v.mean()), 6) for w, v in per_query.items()}


def _input_checksums(
    queries: Sequence[Query], qrels: Qrels, queries_path: Path | None, qrels_path: Path | None
) -> dict[str, Any]:
    canonical_queries = json.dumps([[q.qid, q.text] for q in queries], ensure_ascii=False).encode()
    canonical_qrels = json.dumps(qrels, sort_keys=True).encode()
    inputs: dict[str, Any] = {
        "queries": {"content_sha256": hashlib.sha256(canonical_queries).hexdigest(), "count": len(queries)},
        "qrels": {"content_sha256": hashlib.sha256(canonical_qrels).hexdigest(), "queries": len(qrels)},
    }
    if queries_path is not None:
        inputs["queries"].update(path=str(queries_path), sha256=sha256_file(queries_path))
    if qrels_path is not None:
        inputs["qrels"].update(path=str(qrels_path), sha256=sha256_file(qrels_path))
    return inputs


def train_reranker(
    index: SearchIndex,
    encoder: Encoder,
    queries: Sequence[Query] | str | Path,
    qrels: Qrels | str | Path,
    out_dir: str | Path,
    model_type: str | None = None,
    config: TrainingConfig | None = None,
    *,
    overwrite: bool = False,
) -> TrainingResult:
    """Train a reranker on ``index`` from judged ``queries`` and write it to ``out_dir``.

    ``queries`` and ``qrels`` are in-memory data or BEIR files (whose checksums then go into the
    manifest). ``model_type`` ("lambdamart" or "logreg") overrides ``config.model_type``.
    """
    started = time.perf_counter()
    config = config or TrainingConfig()
    if model_type is not None and model_type != config.model_type:
        config = dataclasses.replace(config, model_type=model_type)
    queries_path = Path(queries) if isinstance(queries, str | Path) else None
    qrels_path = Path(qrels) if isinstance(qrels, str | Path) else None
    query_list: list[Query] = load_queries(queries) if isinstance(queries, str | Path) else list(queries)
    judgments: Qrels = load_qrels(qrels) if isinstance(qrels, str | Path) else dict(qrels)

    sets = collect_candidates(index, encoder, query_list, judgments, depth=config.depth, fusion=config.fusion)
    folds = [fold_of(s.qid, config.folds, config.split_salt) for s in sets]
    if len(set(folds)) < config.folds:
        raise ValueError(f"{len(sets)} judged queries are too few for {config.folds} validation folds")
    columns = np.array([FEATURE_NAMES.index(name) for name in config.features])
    out_of_fold: list[np.ndarray | None] = [None] * len(sets)
    members: list[RankingModel] = []
    for k in range(config.folds):
        fit_sets = [s for s, f in zip(sets, folds, strict=True) if f != k]
        valid_sets = [s for s, f in zip(sets, folds, strict=True) if f == k]
        logger.info(
            "fold %d: fitting %s on %d queries, validating on %d", k, config.model_type, len(fit_sets), len(valid_sets)
        )
        member = fit_model(config, fit_sets, valid_sets)
        members.append(member)
        for i, f in enumerate(folds):
            if f == k:
                out_of_fold[i] = member.predict(sets[i].features[:, columns])
    max_terms = None
    if config.support_quantile is not None:
        lengths = np.array([s.query_terms or 0 for s in sets])
        max_terms = int(np.ceil(np.quantile(lengths, config.support_quantile)))
    # Out-of-support training queries keep the fused order, as they will when served.
    raw = [
        r if r is not None and (max_terms is None or (s.query_terms or 0) <= max_terms) else -s.fused_ranks
        for r, s in zip(out_of_fold, sets, strict=True)
    ]
    prior_weight, by_weight = choose_prior_weight(raw, sets, judgments, config)
    model: RankingModel
    if config.model_type == "lambdamart":
        model = LambdaMartModel.bag([m for m in members if isinstance(m, LambdaMartModel)])
    else:
        model = fit_model(config, sets, [])
    fused = ndcg_at_10(sets, [-s.fused_ranks for s in sets], judgments)
    metrics: dict[str, Any] = {
        "valid": {
            "queries": len(sets),
            "folds": config.folds,
            "fused_ndcg@10": round(fused, 6),
            "rerank_ndcg@10": by_weight[f"{prior_weight:g}"],
            "rerank_ndcg@10_by_prior_weight": by_weight,
        },
        "fit": {"queries": len(sets), "candidates": int(sum(len(s.doc_ids) for s in sets))},
    }
    if isinstance(model, LambdaMartModel):
        metrics["fit"]["trees"] = model.trees
    logger.info(
        "out-of-fold validation NDCG@10: fused %.4f, reranked %.4f (prior weight %g)",
        fused,
        metrics["valid"]["rerank_ndcg@10"],
        prior_weight,
    )

    reranker = LearnedReranker(model, prior_weight, max_query_terms=max_terms)
    out = Path(out_dir)
    with staged_directory(out, overwrite=overwrite) as staging:
        reranker.save(staging)
        manifest = Manifest(
            kind=KIND,
            format_version=FORMAT_VERSION,
            created_at=utc_now(),
            files=checksum_files(staging),
            params={**config.to_dict(), "prior_weight": prior_weight, "max_query_terms": max_terms},
            inputs=_input_checksums(query_list, judgments, queries_path, qrels_path),
            parents={"index": index.manifest.content_id, "encoder": str(index.encoder_info.get("checksum"))},
            stats={"train_seconds": round(time.perf_counter() - started, 3)},
            metrics=metrics,
            libraries=library_versions(),
            code_version=code_version(),
        )
        manifest.write(staging)
    reranker = LearnedReranker(model, prior_weight, manifest.version, max_terms)
    logger.info("reranker %s written to %s", manifest.version, out)
    return TrainingResult(reranker, manifest, out, metrics)


def describe(importances: Mapping[str, float]) -> list[tuple[str, float]]:
    """Features sorted by the magnitude of their importance, largest first."""
    return sorted(importances.items(), key=lambda item: -abs(item[1]))
