"""The learned disambiguator: scores (mention, candidate) feature rows, and decides NIL.

Two model types share one interface: LightGBM (``lightgbm``, the default for the benchmark
linker; objective ``binary`` = p(correct | features), or ``lambdarank`` = a ranking within each
mention's candidates, squashed by a sigmoid) and an L2-regularized logistic regression on
standardized features (``logistic``, for small training sets such as the demo's).

A model may have two passes (``collective=True``): the first scores the base features
(:data:`linking.features.BASE_FEATURE_NAMES`); the second also sees, for each candidate, its
coherence with the entities the first pass resolved for the document's other mentions, and the
first-pass score itself (:func:`linking.features.collective_features`). The linker runs both.

A mention is NIL when its best candidate's score is below ``nil_threshold`` and leads the
runner-up by less than ``nil_margin``, both chosen by cross-validation (see :mod:`linking.training`).
Mentions the linker detected itself may have their own rule (``nil_threshold_detected``,
``nil_margin_detected``), chosen by end-to-end F1 on the detected mentions of the training
documents: a detected span can be no entity mention at all, which a gold span never is.

A model trained with ``mention_prior`` also holds the mention -> entity counts of its training
annotations (:class:`linking.prior.MentionPrior`); the linker fills the prior columns from them.

A model directory holds ``model.json`` (type, feature names, threshold, weights or the LightGBM
boosters as text, the mention prior's counts) and ``manifest.json`` (kind ``linker``, parents: the
KB and the encoder). Format 3 added the prior's columns and counts; a format-2 model still loads
and scores the columns it was trained on (its feature names pick them out of today's rows).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from artifacts import Manifest, checksum_files, code_version, library_versions, staged_directory, utc_now
from artifacts.drift import write_reference
from linking.errors import ModelNotTrainedError
from linking.features import BASE_FEATURE_NAMES, FEATURE_NAMES
from linking.prior import MentionPrior

logger = logging.getLogger(__name__)

LINKER_KIND = "linker"
LINKER_FORMAT_VERSION = 3
MODEL_FILE = "model.json"
MODEL_TYPES = ("lightgbm", "logistic")
OBJECTIVES = ("binary", "lambdarank")
FIRST_PASS_COLUMNS = len(BASE_FEATURE_NAMES)


class Scorer(Protocol):
    """Anything that scores feature rows (higher = more likely the right entity) and has a NIL rule."""

    nil_threshold: float

    def score(self, features: np.ndarray) -> np.ndarray: ...

    def nil_rule(self, *, detected: bool = False) -> tuple[float, float]: ...


@dataclass(frozen=True)
class DisambiguatorConfig:
    """Model type and hyperparameters (recorded in the model file and manifest).

    ``mention_prior``: fill the prior columns from gold-annotation counts (:mod:`linking.prior`;
    off, they stay zero). ``prior_candidates``: with the prior, its most counted entities for a
    surface are candidates too (:class:`~linking.candidates.CandidateGenerator`), in training from
    out-of-fold counts. ``drop``: feature columns held at zero in training, so the model never
    uses them (ablations).
    """

    model_type: str = "lightgbm"
    objective: str = "binary"
    collective: bool = True
    n_estimators: int = 600
    learning_rate: float = 0.03
    num_leaves: int = 31
    min_child_samples: int = 20
    subsample: float = 0.8
    colsample: float = 0.8
    logistic_c: float = 1.0
    seed: int = 13
    mention_prior: bool = True
    prior_candidates: bool = True
    drop: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["drop"] = list(self.drop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DisambiguatorConfig:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        if "drop" in values:
            values["drop"] = tuple(values["drop"])
        # models saved before the prior existed were trained without it
        values.setdefault("mention_prior", False)
        values.setdefault("prior_candidates", False)
        return cls(**values)


def candidate_prior(scorer: object) -> MentionPrior | None:
    """The annotation counts a scorer's model was trained to draw candidates from (None if it was not)."""
    config = getattr(scorer, "config", None)
    if config is None or not getattr(config, "prior_candidates", False):
        return None
    prior: MentionPrior | None = getattr(scorer, "mention_prior", None)
    return prior


class PriorScorer:
    """The baseline: score = 1 / alias rank (the alias table's first choice wins), no NIL."""

    nil_threshold = 0.0
    nil_margin = 1.0

    def nil_rule(self, *, detected: bool = False) -> tuple[float, float]:
        return self.nil_threshold, self.nil_margin

    def score(self, features: np.ndarray) -> np.ndarray:
        return (
            features[:, FEATURE_NAMES.index("inv_alias_rank")].astype(np.float64)
            + 1e-3 * features[:, FEATURE_NAMES.index("ctx_sim")]
        )


@dataclass
class Disambiguator:
    """A trained scorer over :data:`linking.features.FEATURE_NAMES` (the first ``columns`` of them).

    Example:
        >>> model = Disambiguator.train(features, labels)  # doctest: +SKIP
        >>> model.score(features[:3])  # doctest: +SKIP
    """

    config: DisambiguatorConfig = field(default_factory=DisambiguatorConfig)
    nil_threshold: float = 0.0
    nil_margin: float = 1.0
    nil_threshold_detected: float | None = None
    nil_margin_detected: float | None = None
    feature_names: tuple[str, ...] = FEATURE_NAMES
    second: Disambiguator | None = None
    mention_prior: MentionPrior | None = None
    _columns: int = len(FEATURE_NAMES)
    _index: np.ndarray | None = None
    _booster: Any = None
    _weights: np.ndarray | None = None
    _bias: float = 0.0
    _mean: np.ndarray | None = None
    _scale: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    _compiled: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def train(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        config: DisambiguatorConfig | None = None,
        *,
        group_sizes: list[int] | None = None,
        columns: int | None = None,
    ) -> Disambiguator:
        """Fit one pass on feature rows and 0/1 labels (1 = the gold entity).

        ``group_sizes`` (rows per mention, in order) is needed by the ``lambdarank`` objective;
        ``columns`` limits the model to the first columns (the base features of a first pass).
        """
        config = config or DisambiguatorConfig()
        if config.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model type {config.model_type!r} (choose {', '.join(MODEL_TYPES)})")
        if config.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {config.objective!r} (choose {', '.join(OBJECTIVES)})")
        if features.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"{features.shape[1]} feature columns, expected {len(FEATURE_NAMES)}")
        labels = np.asarray(labels, dtype=np.int32)
        if labels.min(initial=1) == labels.max(initial=0):
            raise ValueError("training needs both correct and wrong candidates")
        columns = columns or len(FEATURE_NAMES)
        features = features[:, :columns]
        unknown = [name for name in config.drop if name not in FEATURE_NAMES]
        if unknown:
            raise ValueError(f"drop: unknown feature(s) {', '.join(unknown)}")
        dropped = [FEATURE_NAMES.index(name) for name in config.drop if FEATURE_NAMES.index(name) < columns]
        if dropped:
            features = features.copy()
            features[:, dropped] = 0.0
        model = cls(config=config, _columns=columns)
        if config.model_type == "lightgbm":
            import lightgbm

            params = {
                "objective": config.objective,
                "learning_rate": config.learning_rate,
                "num_leaves": config.num_leaves,
                "min_data_in_leaf": config.min_child_samples,
                "bagging_fraction": config.subsample,
                "bagging_freq": 1,
                "feature_fraction": config.colsample,
                "seed": config.seed,
                "deterministic": True,
                "num_threads": 1,
                "verbose": -1,
            }
            dataset = lightgbm.Dataset(
                features, label=labels, feature_name=list(FEATURE_NAMES[:columns]), free_raw_data=False
            )
            if config.objective == "lambdarank":
                if group_sizes is None or sum(group_sizes) != len(labels):
                    raise ValueError("the lambdarank objective needs group_sizes that add up to the rows")
                dataset.set_group(group_sizes)
                params["lambdarank_truncation_level"] = 5
            model._booster = lightgbm.train(params, dataset, num_boost_round=config.n_estimators)
        else:
            from sklearn.linear_model import LogisticRegression

            mean = features.mean(axis=0)
            scale = features.std(axis=0)
            scale[scale == 0] = 1.0
            clf = LogisticRegression(C=config.logistic_c, max_iter=2000, random_state=config.seed)
            clf.fit((features - mean) / scale, labels)
            model._weights = clf.coef_[0].astype(np.float64)
            model._bias = float(clf.intercept_[0])
            model._mean, model._scale = mean.astype(np.float64), scale.astype(np.float64)
        return model

    @property
    def collective(self) -> bool:
        """True when a second, collective pass refines this model's scores."""
        return self.second is not None

    def score(self, features: np.ndarray) -> np.ndarray:
        """This pass's score of each feature row, in (0, 1): higher = more likely the right entity."""
        if len(features) == 0:
            return np.zeros(0, dtype=np.float64)
        features = features[:, self._index] if self._index is not None else features[:, : self._columns]
        if self._booster is not None:
            predicted = (
                self._compiled.predict(features)
                if self._compiled is not None
                else self._booster.predict(features, num_threads=1)
            )
            raw = np.asarray(predicted, dtype=np.float64)
            return 1.0 / (1.0 + np.exp(-raw)) if self.config.objective == "lambdarank" else raw
        if self._weights is not None and self._mean is not None and self._scale is not None:
            z = ((features - self._mean) / self._scale) @ self._weights + self._bias
            return 1.0 / (1.0 + np.exp(-z))
        raise ModelNotTrainedError("the disambiguator has not been trained or loaded")

    def compile_trees(self, cache_dir: Path | None = None) -> None:
        """Score with this model's LightGBM trees (both passes) compiled to native code from now on:
        the same scores, about five times faster (:mod:`linking.compiled_trees`). Nothing changes for a
        logistic model, or when the trees cannot be compiled."""
        from linking.compiled_trees import compile_booster

        for model in (self, self.second):
            if model is not None and model._booster is not None and model._compiled is None:
                model._compiled = compile_booster(model._booster, cache_dir)

    def with_threshold(
        self, threshold: float, margin: float = 1.0, *, detected: tuple[float, float] | None = None
    ) -> Disambiguator:
        """The same model with another NIL rule: NIL when the best score < ``threshold`` and leads by < ``margin``.

        ``detected`` = (threshold, margin) sets the rule for detected mentions; without it they use
        the same rule as given spans.
        """
        self.nil_threshold = float(threshold)
        self.nil_margin = float(margin)
        if detected is None:
            self.nil_threshold_detected = self.nil_margin_detected = None
        else:
            self.nil_threshold_detected, self.nil_margin_detected = float(detected[0]), float(detected[1])
        return self

    def nil_rule(self, *, detected: bool = False) -> tuple[float, float]:
        """(threshold, margin) for given spans, or for detected mentions (their own rule if it has one)."""
        if detected and self.nil_threshold_detected is not None:
            margin = self.nil_margin_detected if self.nil_margin_detected is not None else 1.0
            return self.nil_threshold_detected, margin
        return self.nil_threshold, self.nil_margin

    def feature_importance(self) -> dict[str, float]:
        """Gain per feature (LightGBM) or |weight| (logistic) of this pass, for reports."""
        names = self.feature_names[: self._columns]
        if self._booster is not None:
            gains = self._booster.feature_importance(importance_type="gain")
            return {n: float(g) for n, g in zip(names, gains, strict=True)}
        if self._weights is not None:
            return {n: float(abs(w)) for n, w in zip(names, self._weights, strict=True)}
        return {}

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model_type": self.config.model_type,
            "config": self.config.to_dict(),
            "feature_names": list(self.feature_names),
            "nil_threshold": self.nil_threshold,
            "nil_margin": self.nil_margin,
            "columns": self._columns,
        }
        if self.nil_threshold_detected is not None:
            data["nil_threshold_detected"] = self.nil_threshold_detected
            data["nil_margin_detected"] = self.nil_margin_detected
        if self.second is not None:
            data["second"] = self.second.to_dict()
        if self.mention_prior is not None:
            data["mention_prior"] = self.mention_prior.to_dict()
        if self._booster is not None:
            data["booster"] = self._booster.model_to_string()
        elif self._weights is not None and self._mean is not None and self._scale is not None:
            data["weights"] = self._weights.tolist()
            data["bias"] = self._bias
            data["mean"] = self._mean.tolist()
            data["scale"] = self._scale.tolist()
        else:
            raise ModelNotTrainedError("cannot save an untrained disambiguator")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Disambiguator:
        names = tuple(data["feature_names"])
        columns = int(data.get("columns", len(names)))
        index = None
        if names != FEATURE_NAMES:
            # an older model: its columns by name (the columns added since are left out)
            missing = [name for name in names[:columns] if name not in FEATURE_NAMES]
            if missing:
                from artifacts import IncompatibleArtifactError

                raise IncompatibleArtifactError(
                    f"the model was trained on features this code lacks ({', '.join(missing[:5])}); retrain it"
                )
            index = np.asarray([FEATURE_NAMES.index(name) for name in names[:columns]], dtype=np.intp)
        model = cls(
            config=DisambiguatorConfig.from_dict(data["config"]),
            nil_threshold=float(data["nil_threshold"]),
            nil_margin=float(data.get("nil_margin", 1.0)),
            feature_names=names,
            _columns=columns,
            _index=index,
        )
        if data.get("mention_prior") is not None:
            model.mention_prior = MentionPrior.from_dict(data["mention_prior"])
        if data.get("nil_threshold_detected") is not None:
            model.nil_threshold_detected = float(data["nil_threshold_detected"])
            model.nil_margin_detected = float(data.get("nil_margin_detected", 1.0))
        if "booster" in data:
            import lightgbm

            model._booster = lightgbm.Booster(model_str=data["booster"])
        else:
            model._weights = np.asarray(data["weights"], dtype=np.float64)
            model._bias = float(data["bias"])
            model._mean = np.asarray(data["mean"], dtype=np.float64)
            model._scale = np.asarray(data["scale"], dtype=np.float64)
        if "second" in data:
            model.second = cls.from_dict(data["second"])
        return model

    def save(
        self,
        directory: str | Path,
        *,
        parents: dict[str, str],
        params: dict[str, Any],
        inputs: dict[str, Any],
        overwrite: bool = False,
        drift_reference: dict[str, Any] | None = None,
    ) -> Manifest:
        """Write ``model.json`` (and the drift reference, when given) and a manifest (kind ``linker``)."""
        with staged_directory(directory, overwrite=overwrite) as staging:
            (staging / MODEL_FILE).write_text(json.dumps(self.to_dict()) + "\n", encoding="utf-8")
            if drift_reference:
                write_reference(staging, drift_reference)
            manifest = Manifest(
                kind=LINKER_KIND,
                format_version=LINKER_FORMAT_VERSION,
                created_at=utc_now(),
                files=checksum_files(staging),
                params={
                    **params,
                    "model": self.config.to_dict(),
                    "nil_threshold": self.nil_threshold,
                    "nil_margin": self.nil_margin,
                    "nil_threshold_detected": self.nil_threshold_detected,
                    "nil_margin_detected": self.nil_margin_detected,
                },
                inputs=inputs,
                parents=parents,
                metrics=self.metrics,
                libraries=library_versions(),
                code_version=code_version(),
            )
            manifest.write(staging)
        logger.info("wrote linker model %s to %s", manifest.content_id, directory)
        return manifest

    @classmethod
    def load(cls, directory: str | Path) -> tuple[Disambiguator, Manifest]:
        """Read a model directory written by :meth:`save`, verifying checksums."""
        directory = Path(directory)
        manifest = Manifest.read(directory, kind=LINKER_KIND, max_format_version=LINKER_FORMAT_VERSION)
        manifest.verify(directory)
        try:
            data = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            from artifacts import CorruptArtifactError

            raise CorruptArtifactError(f"{directory / MODEL_FILE}: unreadable: {exc}") from exc
        model = cls.from_dict(data)
        model.metrics = dict(manifest.metrics)
        return model, manifest
