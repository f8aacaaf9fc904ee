"""Learned rerankers: LightGBM LambdaMART and logistic regression behind one interface.

A model directory holds ``reranker.json`` (model type, features, the fused-prior weight, the
query-length support), the model files (``lambdamart.txt`` and, for a bag of fold models,
``lambdamart-1.txt`` ...: LightGBM's own text format; or ``logreg.json``, the standardization and
weights; never a pickle) and ``manifest.json`` (kind ``"reranker"``: training data checksums,
parameters, out-of-fold validation metrics, library versions, and the content id of the index it
was trained on).

The final score mixes the model with the fused ranking it rescores::

    score(d) = z(model(d)) + prior_weight * z(1 / (60 + fused_rank(d)))

where ``z`` standardizes over the query's candidates. ``prior_weight`` is chosen on held-out
training queries; queries longer than the model's support (``max_query_terms``) keep the fused
order. Both keep the reranker close to its input where it has no evidence, which is what makes it
safe on corpora it never saw.

Example:
    >>> reranker = LearnedReranker.load("models/reranker")  # doctest: +SKIP
    >>> searcher = Searcher(index, encoder, reranker=reranker)  # doctest: +SKIP
    >>> searcher.search(SearchRequest("aspirin and heart attacks", rerank=True))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np

from artifacts import ArtifactNotFoundError, CorruptArtifactError, Manifest
from retrieval.index import SearchIndex
from retrieval.rerank_features import FEATURE_NAMES, MONOTONE, RRF_K, candidate_features
from retrieval.types import ScoredHit

logger = logging.getLogger(__name__)

KIND = "reranker"
FORMAT_VERSION = 1
CONFIG_FILE = "reranker.json"
MODEL_TYPES = ("lambdamart", "logreg")


class RankingModel(Protocol):
    """A trained scoring function over a fixed list of named features."""

    model_type: str
    feature_names: tuple[str, ...]

    @property
    def members(self) -> int:
        """How many models are averaged (a bag of fold models, or 1)."""
        ...

    def predict(self, features: np.ndarray) -> np.ndarray:
        """One score per row of ``features`` (columns in ``feature_names`` order)."""
        ...

    def save(self, directory: Path) -> None: ...

    def importances(self) -> dict[str, float]:
        """What the model relies on, by feature (gain share, or standardized weight)."""
        ...


@dataclass(frozen=True)
class LambdaMartParams:
    """LightGBM lambdarank settings. ``monotone`` applies ``rerank_features.MONOTONE``."""

    num_leaves: int = 7
    min_data_in_leaf: int = 50
    learning_rate: float = 0.05
    num_rounds: int = 400
    early_stopping_rounds: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    monotone: bool = True
    seed: int = 13

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LogRegParams:
    """L2-regularized logistic regression on standardized features (``C`` = inverse strength)."""

    c: float = 1.0
    balanced: bool = True
    max_iter: int = 2000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LambdaMartModel:
    """LightGBM LambdaMART (Burges 2010): gradient-boosted trees optimizing NDCG via lambdas.

    It may hold several boosters (a bag, e.g. one per cross-validation fold); the score is their
    mean, which lowers the variance of a model fitted on a few hundred queries.
    """

    model_type = "lambdamart"
    MODEL_FILE = "lambdamart.txt"
    """The first booster's file; a bag of n adds ``lambdamart-1.txt`` ... ``lambdamart-{n-1}.txt``."""

    def __init__(self, boosters: Sequence[lgb.Booster], feature_names: Sequence[str]) -> None:
        if not boosters:
            raise ValueError("a LambdaMART model needs at least one booster")
        self.boosters = list(boosters)
        self.feature_names = tuple(feature_names)

    @classmethod
    def fit(
        cls,
        train: tuple[np.ndarray, np.ndarray, np.ndarray],
        valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
        feature_names: Sequence[str],
        params: LambdaMartParams,
        *,
        threads: int = 1,
    ) -> LambdaMartModel:
        """Train on ``(features, labels, group sizes)``; early stopping on ``valid``'s NDCG@10."""
        x, y, groups = train
        settings: dict[str, Any] = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "num_leaves": params.num_leaves,
            "min_data_in_leaf": params.min_data_in_leaf,
            "learning_rate": params.learning_rate,
            "feature_fraction": params.feature_fraction,
            "bagging_fraction": params.bagging_fraction,
            "bagging_freq": 1 if params.bagging_fraction < 1.0 else 0,
            "lambda_l2": params.lambda_l2,
            "seed": params.seed,
            "deterministic": True,
            "num_threads": threads,
            "verbosity": -1,
        }
        if params.monotone:
            settings["monotone_constraints"] = [MONOTONE.get(name, 0) for name in feature_names]
            settings["monotone_constraints_method"] = "advanced"
        train_set = lgb.Dataset(x, label=y, group=groups, feature_name=list(feature_names), free_raw_data=False)
        valid_sets: list[lgb.Dataset] = []
        callbacks: list[Callable[..., Any]] = []
        if valid is not None:
            vx, vy, vgroups = valid
            valid_sets = [lgb.Dataset(vx, label=vy, group=vgroups, reference=train_set)]
            callbacks = [lgb.early_stopping(params.early_stopping_rounds, verbose=False)]
        booster = lgb.train(
            settings, train_set, num_boost_round=params.num_rounds, valid_sets=valid_sets, callbacks=callbacks
        )
        if booster.best_iteration:
            # Keep only the trees up to the best validation iteration.
            booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration))
        logger.info("LambdaMART: %d trees", booster.num_trees())
        return cls([booster], feature_names)

    @classmethod
    def bag(cls, models: Sequence[LambdaMartModel]) -> LambdaMartModel:
        """One model averaging the boosters of ``models`` (which must share their features)."""
        names = {m.feature_names for m in models}
        if len(names) != 1:
            raise ValueError("bagged models must use the same features")
        return cls([b for m in models for b in m.boosters], models[0].feature_names)

    @property
    def trees(self) -> list[int]:
        return [int(b.num_trees()) for b in self.boosters]

    def predict(self, features: np.ndarray) -> np.ndarray:
        total = np.zeros(len(features), dtype=np.float64)
        for booster in self.boosters:
            total += booster.predict(features, num_threads=1)  # one request: no OpenMP team
        return total / len(self.boosters)

    @classmethod
    def _file(cls, i: int) -> str:
        return cls.MODEL_FILE if i == 0 else f"lambdamart-{i}.txt"

    def save(self, directory: Path) -> None:
        for i, booster in enumerate(self.boosters):
            booster.save_model(str(directory / self._file(i)))

    @classmethod
    def load(cls, directory: Path, feature_names: Sequence[str], count: int = 1) -> LambdaMartModel:
        boosters = []
        for i in range(count):
            path = directory / cls._file(i)
            if not path.is_file():
                raise ArtifactNotFoundError(f"{directory}: missing model file {path.name}")
            booster = lgb.Booster(model_file=str(path))
            if tuple(booster.feature_name()) != tuple(feature_names):
                raise CorruptArtifactError(f"{path}: model features {booster.feature_name()} != {list(feature_names)}")
            boosters.append(booster)
        return cls(boosters, feature_names)

    def importances(self) -> dict[str, float]:
        gains = np.sum(
            [np.asarray(b.feature_importance(importance_type="gain"), dtype=np.float64) for b in self.boosters], axis=0
        )
        total = gains.sum()
        shares = gains / total if total > 0 else gains
        return {name: float(v) for name, v in zip(self.feature_names, shares, strict=True)}

    @property
    def members(self) -> int:
        return len(self.boosters)


class LogisticModel:
    """Logistic regression on standardized features; the score is the log-odds ``w . z(x) + b``."""

    model_type = "logreg"
    MODEL_FILE = "logreg.json"
    members = 1

    def __init__(
        self, mean: np.ndarray, scale: np.ndarray, weights: np.ndarray, bias: float, feature_names: Sequence[str]
    ) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)
        self.feature_names = tuple(feature_names)
        if not (len(self.mean) == len(self.scale) == len(self.weights) == len(self.feature_names)):
            raise ValueError("mean, scale, weights and feature names differ in length")

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: np.ndarray, feature_names: Sequence[str], params: LogRegParams
    ) -> LogisticModel:
        """Fit on pointwise binary labels (judgment >= 1 is relevant)."""
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(features, dtype=np.float64)
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        model = LogisticRegression(
            C=params.c, class_weight="balanced" if params.balanced else None, max_iter=params.max_iter
        )
        model.fit((x - mean) / scale, (np.asarray(labels) >= 1).astype(int))
        return cls(mean, scale, model.coef_[0], float(model.intercept_[0]), feature_names)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.bias

    def save(self, directory: Path) -> None:
        payload = {
            "features": list(self.feature_names),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "bias": self.bias,
        }
        (directory / self.MODEL_FILE).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, feature_names: Sequence[str], count: int = 1) -> LogisticModel:
        payload = json.loads((directory / cls.MODEL_FILE).read_text(encoding="utf-8"))
        if tuple(payload["features"]) != tuple(feature_names):
            raise CorruptArtifactError(f"{directory}: model features {payload['features']} != {list(feature_names)}")
        return cls(payload["mean"], payload["scale"], payload["weights"], payload["bias"], feature_names)

    def importances(self) -> dict[str, float]:
        """The weights on standardized features (log-odds change per standard deviation)."""
        return {name: float(w) for name, w in zip(self.feature_names, self.weights, strict=True)}


def _zscore(values: np.ndarray) -> np.ndarray:
    std = values.std()
    return (values - values.mean()) / std if std > 1e-12 else np.zeros_like(values)


def mix_with_prior(model_scores: np.ndarray, fused_ranks: np.ndarray, prior_weight: float) -> np.ndarray:
    """``z(model) + prior_weight * z(1 / (60 + fused_rank))`` over one query's candidates."""
    scores = _zscore(np.asarray(model_scores, dtype=np.float64))
    if prior_weight:
        scores = scores + prior_weight * _zscore(1.0 / (RRF_K + np.asarray(fused_ranks, dtype=np.float64)))
    return scores


def query_terms(index: SearchIndex, query: str) -> int:
    """Distinct analyzed terms of ``query`` (the index's analyzer; unknown words count too)."""
    return len(set(index.bm25.tokenizer.tokenize(query)))


class LearnedReranker:
    """A :class:`retrieval.pipeline.Reranker` that scores candidates with a trained model.

    ``max_query_terms`` bounds the queries the model was trained for (a high quantile of the
    training queries' distinct terms). A longer query lies outside what the model has seen; there
    the reranker abstains and returns the fused order (as scores), because a model fitted on short
    queries has no evidence about how its features behave on long ones.
    """

    def __init__(
        self,
        model: RankingModel,
        prior_weight: float = 0.0,
        version: str = "reranker@unsaved",
        max_query_terms: int | None = None,
    ) -> None:
        unknown = [name for name in model.feature_names if name not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"model uses unknown features {unknown}")
        self.model = model
        self.prior_weight = float(prior_weight)
        self.version = version
        self.max_query_terms = max_query_terms
        self._columns = np.array([FEATURE_NAMES.index(name) for name in model.feature_names], dtype=np.int64)

    def select(self, all_features: np.ndarray) -> np.ndarray:
        """The model's columns of a full ``candidate_features`` matrix."""
        return all_features[:, self._columns]

    def in_support(self, n_query_terms: int | None) -> bool:
        return self.max_query_terms is None or n_query_terms is None or n_query_terms <= self.max_query_terms

    def score_features(
        self, all_features: np.ndarray, fused_ranks: np.ndarray, n_query_terms: int | None = None
    ) -> np.ndarray:
        """Scores from precomputed features (as training and benchmarks use them)."""
        if len(all_features) == 0:
            return np.zeros(0)
        if not self.in_support(n_query_terms):
            return mix_with_prior(np.zeros(len(fused_ranks)), fused_ranks, 1.0)
        return mix_with_prior(self.model.predict(self.select(all_features)), fused_ranks, self.prior_weight)

    def score(
        self,
        query: str,
        candidates: Sequence[ScoredHit],
        index: SearchIndex,
        query_vector: np.ndarray | None,
    ) -> np.ndarray:
        ranks = np.fromiter((h.rank for h in candidates), dtype=np.float64, count=len(candidates))
        n_terms = query_terms(index, query)
        if not self.in_support(n_terms):
            logger.debug(
                "query of %d terms is beyond the model's %d: keeping the fused order", n_terms, self.max_query_terms
            )
            return mix_with_prior(np.zeros(len(candidates)), ranks, 1.0)
        features = candidate_features(query, candidates, index, query_vector)
        return self.score_features(features, ranks)

    def save(self, directory: Path) -> None:
        """Write the model and its config (the caller writes the manifest)."""
        config = {
            "model_type": self.model.model_type,
            "features": list(self.model.feature_names),
            "prior_weight": self.prior_weight,
            "max_query_terms": self.max_query_terms,
            "rrf_k": RRF_K,
            "members": self.model.members,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        self.model.save(directory)

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> LearnedReranker:
        """Open a reranker model directory written by :func:`~retrieval.rerank_training.train_reranker`.

        Raises ``ArtifactNotFoundError`` (no such directory or manifest), ``CorruptArtifactError``
        (files damaged, unreadable or inconsistent) or ``IncompatibleArtifactError`` (another kind of
        artifact, or a newer format).
        """
        path = Path(path)
        manifest = Manifest.read(path, kind=KIND, max_format_version=FORMAT_VERSION)
        if verify:
            manifest.verify(path)
        try:
            config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
            model_type = config["model_type"]
            features = tuple(config["features"])
            prior_weight = float(config["prior_weight"])
            members = int(config.get("members", 1))
            max_terms = config.get("max_query_terms")
            max_query_terms = None if max_terms is None else int(max_terms)
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"{path}: missing {CONFIG_FILE}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptArtifactError(f"{path}: unreadable {CONFIG_FILE}: {exc}") from exc
        model_class: type[LambdaMartModel] | type[LogisticModel]
        if model_type == "lambdamart":
            model_class = LambdaMartModel
        elif model_type == "logreg":
            model_class = LogisticModel
        else:
            raise CorruptArtifactError(f"{path}: unknown model type {model_type!r} (expected one of {MODEL_TYPES})")
        if not (path / model_class.MODEL_FILE).is_file():
            raise ArtifactNotFoundError(f"{path}: missing model file {model_class.MODEL_FILE}")
        try:
            model = model_class.load(path, features, members)
            return cls(model, prior_weight, manifest.version, max_query_terms)
        except (OSError, ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as exc:
            raise CorruptArtifactError(f"{path}: cannot load {model_type} model: {exc}") from exc
