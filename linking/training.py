"""Training and cross-validating the disambiguator on benchmark documents.

:func:`train_linker` is the one way to train a linker: it prepares the documents (with their
short-name copies), cross-validates, chooses the NIL rule, fits the model, records its metrics
and drift reference, and returns a :class:`TrainedLinker` to save. The functions below it are
its steps, public for experiments.

Example:
    >>> linker = EntityLinker.build(kb, encoder, detector=MentionDetector(load_spacy()))  # doctest: +SKIP
    >>> trained = train_linker(linker, {"aquaint": read_benchmark("aquaint.jsonl")})  # doctest: +SKIP
    >>> trained.cv.f1_overall  # doctest: +SKIP
    >>> trained.save("models/linker")  # doctest: +SKIP

Training rows are every (gold mention, candidate) pair with label 1 for the gold entity. The NIL
threshold is tuned on out-of-fold scores: cross-validation folds are whole documents, and whole
days of dated news (``GroupKFold`` over :attr:`TrainingDocument.group`), so no document's mentions
are both trained and scored on, nor its same-day sibling stories'.

A collective (two-pass) model is stacked: the second pass is trained on collective features
computed from *out-of-fold* first-pass scores, so it learns how far to trust first-pass picks of
documents the first pass has not seen, as at test time.

The mention prior (:mod:`linking.prior`) is target encoding and is kept out of fold the same way:
a document's prior columns are filled from the gold counts of the documents of the *other* folds
(in cross-validation, of the folds other than its own and the one held out; a held-out document
from every training fold), so no document's features count its own annotations. The final model
keeps the counts of all training documents for new text. Only original documents are counted (not
their short-name copies, whose surfaces are made up); a copy shares its source's fold.

The same documents prepared on the mentions the detector finds (``prepare_documents(...,
detected=True)``) are scored by the fold models too, and choose a second NIL rule by end-to-end
F1: a detected span may be no entity mention at all (or one the annotators left out), which
makes NIL the right answer more often than on gold spans.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import Manifest
from artifacts.drift import Histogram
from linking.augmentation import shorten_person_mentions
from linking.disambiguation import FIRST_PASS_COLUMNS, Disambiguator, DisambiguatorConfig
from linking.drift import linking_reference
from linking.evaluation import EvaluationResult, PRFCounts, score_document
from linking.features import collective_features
from linking.normalization import normalize_alias
from linking.pipeline import EntityLinker, LinkOptions, PreparedDocument
from linking.prior import MentionPrior
from linking.types import Candidate, LinkingDocument, Mention

logger = logging.getLogger(__name__)

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 0.51, 0.02))
# Detected mentions include spans that are no entity at all: their rule may need a higher threshold.
THRESHOLDS_DETECTED = tuple(round(t, 2) for t in np.arange(0.0, 0.91, 0.02))
MARGINS = (0.05, 0.1, 0.2, 0.3, 1.0)
# CV F1 is flat over a wide range of thresholds; its arg-max inside that plateau moves with the
# seed and the data (0.04 to 0.20 across leave-one-dataset-out folds). The middle of the plateau
# (thresholds within this much F1 of the best) is stable (0.26 to 0.28) and transfers as well.
PLATEAU = 0.005


@dataclass(frozen=True, eq=False)
class TrainingDocument:
    """A benchmark document prepared on its gold spans, with the gold entities and its set's name."""

    document: LinkingDocument
    prepared: PreparedDocument
    labels: np.ndarray
    dataset: str
    entity_vectors: np.ndarray
    detected: bool = False
    cv_group: str | None = None

    def collective(self, first_scores: np.ndarray) -> np.ndarray:
        """The feature rows with the collective columns filled from ``first_scores``."""
        surfaces = [normalize_alias(m.surface) for m in self.prepared.mentions]
        return collective_features(
            self.prepared.features, self.prepared.groups(), surfaces, self.entity_vectors, first_scores
        )

    def with_prior(self, prior: MentionPrior | None) -> TrainingDocument:
        """This document with its prior columns filled from ``prior`` (itself when None)."""
        if prior is None:
            return self
        prepared = self.prepared
        features = prior.fill(prepared.features, prepared.mentions, prepared.candidates)
        return replace(self, prepared=replace(prepared, features=features))

    @property
    def group_sizes(self) -> list[int]:
        """Rows per mention (mentions without candidates left out), for ranking objectives."""
        return [hi - lo for lo, hi in self.prepared.groups() if hi > lo]

    @property
    def augmented(self) -> bool:
        """True for a synthetic copy (see :func:`shorten_person_mentions`); CV scores originals only."""
        return "#" in self.document.doc_id

    @property
    def group(self) -> str:
        """The CV group: a document and its augmented copies fall in the same fold, and so do the
        stories of one day (a dateline date near the top of the text, see :func:`dateline_day`).
        ``cv_group`` overrides it (model studies compare other groupings)."""
        if self.cv_group is not None:
            return self.cv_group
        day = dateline_day(self.document.text)
        return f"{self.dataset}/day {day}" if day else f"{self.dataset}/{self.document.doc_id.split('#', 1)[0]}"


DATELINE_DATE = re.compile(r"\b(?:19|20)\d\d-\d\d-\d\d\b")
DATELINE_CHARS = 300


def dateline_day(text: str) -> str | None:
    """The ISO date in a news story's dateline (within its first 300 characters), if it has one.

    Cross-validation holds out whole days: same-day stories repeat entities, names and annotations
    (aida_train's 946 stories come from 11 days), while new text (aida_testa: later days) shares
    none of that. Folds by document let a held-out story's siblings train the model and feed its
    out-of-fold prior counts, so CV then rewards trusting those counts more than new days justify.

    Example (the opening of aida_train's first story):
        >>> dateline_day("EU rejects German call to boycott British lamb. Peter Blackburn BRUSSELS 1996-08-22 The")
        '1996-08-22'
    """
    found = DATELINE_DATE.search(text[:DATELINE_CHARS])
    return found.group(0) if found else None


@dataclass
class CrossValidation:
    """Out-of-fold results: the chosen NIL rule (threshold, margin) and ED scores per dataset and overall;
    with detected documents, also their NIL rule and end-to-end scores."""

    threshold: float
    margin: float = 1.0
    f1_by_dataset: dict[str, float] = field(default_factory=dict)
    f1_overall: float = 0.0
    f1_by_threshold: dict[float, float] = field(default_factory=dict)
    first_pass_scores: list[np.ndarray] | None = None
    detected_threshold: float | None = None
    detected_margin: float | None = None
    e2e_f1_by_dataset: dict[str, float] = field(default_factory=dict)
    e2e_f1_overall: float | None = None
    e2e_f1_gold_rule: float | None = None

    @property
    def detected_rule(self) -> tuple[float, float] | None:
        """(threshold, margin) for detected mentions, if detected documents were cross-validated."""
        if self.detected_threshold is None or self.detected_margin is None:
            return None
        return self.detected_threshold, self.detected_margin

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "nil_threshold": float(self.threshold),
            "nil_margin": float(self.margin),
            "cv_f1": self.f1_overall,
            "cv_f1_by_dataset": self.f1_by_dataset,
        }
        if self.detected_rule is not None:
            data.update(
                cv_detected_nil_threshold=self.detected_threshold,
                cv_detected_nil_margin=self.detected_margin,
                cv_e2e_f1_detected_rule=self.e2e_f1_overall,
                cv_e2e_f1_detected_rule_by_dataset=self.e2e_f1_by_dataset,
                cv_e2e_f1_gold_rule=self.e2e_f1_gold_rule,
            )
        return data


def gold_mentions(linker: EntityLinker, document: LinkingDocument) -> list[Mention]:
    """The document's gold spans as mentions, with NER labels as type cues."""
    mentions = [Mention(g.start, g.end, document.text[g.start : g.end]) for g in document.mentions]
    return linker.label_mentions(document.text, mentions)


def prepare_documents(
    linker: EntityLinker,
    documents: Sequence[LinkingDocument],
    dataset: str,
    *,
    detected: bool = False,
    prior: MentionPrior | None = None,
) -> list[TrainingDocument]:
    """Candidates, features and 0/1 labels of every gold mention of ``documents``.

    With ``detected=True``, of every mention the linker's detector finds instead; a detected span
    equal to a gold span is labelled with that gold entity, any other has no right candidate.
    ``prior``: annotation counts that propose candidates too (see :func:`with_prior_candidates`).
    """
    out = []
    found = linker.detect_batch([d.text for d in documents]) if detected else [None] * len(documents)
    for document, spans in zip(documents, found, strict=True):
        mentions = spans if spans is not None else gold_mentions(linker, document)
        prepared = linker.prepare(document.text, mentions, prior=prior)
        labels = np.zeros(len(prepared.features), dtype=np.int32)
        gold_by_span = {(g.start, g.end): g.entity_id for g in document.mentions}
        for mention, cands, (lo, _hi) in zip(prepared.mentions, prepared.candidates, prepared.groups(), strict=True):
            ids = [c.entity_id for c in cands]
            entity_id = gold_by_span.get((mention.start, mention.end))
            if entity_id is not None and entity_id in ids:
                labels[lo + ids.index(entity_id)] = 1
        entity_ids = [c.entity_id for cands in prepared.candidates for c in cands]
        vectors = linker.entity_index.matrix(entity_ids)
        out.append(TrainingDocument(document, prepared, labels, dataset, vectors, detected=detected))
    return out


class FoldPriors:
    """The gold counts of each fold's held-out original documents, for out-of-fold prior columns.

    ``without(j, k)`` is the table of every fold but ``j`` and ``k``: a document of fold ``j``
    gets its prior columns from ``without(j)`` in the final fit, and from ``without(j, k)`` while
    fold ``k`` is held out in cross-validation. ``total`` (every fold) is what the saved model
    keeps. Detected-mention documents share the fold of their gold-span counterpart (the group).
    """

    def __init__(self, documents: Sequence[TrainingDocument], splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        self._fold_of_group: dict[str, int] = {}
        self.parts: list[MentionPrior] = []
        for fold, (_train_idx, test_idx) in enumerate(splits):
            held = [documents[i] for i in test_idx]
            self._fold_of_group.update((d.group, fold) for d in held)
            self.parts.append(MentionPrior.from_documents(d.document for d in held if not d.augmented))
        self.total = sum(self.parts, MentionPrior())
        self._cache: dict[frozenset[int], MentionPrior] = {}

    def fold(self, document: TrainingDocument) -> int:
        """The fold that holds ``document`` (its group) out."""
        return self._fold_of_group[document.group]

    def without(self, *folds: int) -> MentionPrior:
        """The counts of every fold except ``folds``."""
        key = frozenset(folds)
        if key not in self._cache:
            table = self.total
            for fold in sorted(key):
                table = table - self.parts[fold]
            self._cache[key] = table
        return self._cache[key]

    def out_of_fold(self, documents: Sequence[TrainingDocument], *held_out: int) -> list[TrainingDocument]:
        """``documents`` with prior columns from the folds other than their own and ``held_out``."""
        return [d.with_prior(self.without(self.fold(d), *held_out)) for d in documents]


def with_prior_candidates(
    linker: EntityLinker, documents: Sequence[TrainingDocument], priors: FoldPriors | MentionPrior
) -> list[TrainingDocument]:
    """``documents`` with the annotation counts' entities among their candidates, as a model trained
    with ``prior_candidates`` has them when it links new text.

    A training document's candidates come from the counts of the *other* folds (``priors.without(own
    fold)``: its own annotations never propose its gold entity); a plain :class:`MentionPrior` (a dev
    set, scored by a model that keeps every training count) is used as it is. Only documents that
    gain a candidate are prepared again (an encoder pass each). While cross-validation holds out a
    fold ``k``, a training document still has the candidates fold ``k``'s counts proposed, with
    prior columns from ``without(own, k)`` (zero for those): held-out documents, which choose the
    NIL rule and give the CV numbers, are prepared exactly as new text is.
    """
    k = linker.config.candidates.prior_k
    out = []
    for document in documents:
        table = priors.without(priors.fold(document)) if isinstance(priors, FoldPriors) else priors
        have = [{c.entity_id for c in cands} for cands in document.prepared.candidates]
        missing = any(
            entity_id in linker.kb and entity_id not in ids
            for mention, ids in zip(document.prepared.mentions, have, strict=True)
            for entity_id in table.top_entities(mention.surface, k)
        )
        if not missing:
            out.append(document)
            continue
        again = prepare_documents(
            linker, [document.document], document.dataset, detected=document.detected, prior=table
        )[0]
        out.append(replace(again, cv_group=document.cv_group))
    return out


def _fold_priors(
    documents: Sequence[TrainingDocument], config: DisambiguatorConfig, splits: Sequence[tuple[np.ndarray, np.ndarray]]
) -> FoldPriors | None:
    return FoldPriors(documents, splits) if config.mention_prior else None


def stack(documents: Sequence[TrainingDocument]) -> tuple[np.ndarray, np.ndarray]:
    """All feature rows and labels of ``documents``."""
    if not documents:
        raise ValueError("no training documents")
    return (
        np.concatenate([d.prepared.features for d in documents]),
        np.concatenate([d.labels for d in documents]),
    )


def train_disambiguator(
    documents: Sequence[TrainingDocument],
    config: DisambiguatorConfig | None = None,
    *,
    first_pass_scores: Sequence[np.ndarray] | None = None,
    folds: int = 5,
) -> Disambiguator:
    """Fit a disambiguator on all rows of ``documents``.

    A collective config fits the first pass on the base columns, then the second pass on
    collective features from out-of-fold first-pass scores (``first_pass_scores``, one array per
    document, e.g. from :func:`cross_validate`; computed with ``folds`` grouped folds if
    not given).

    With ``config.mention_prior``, each document's prior columns come from the gold counts of the
    other folds (the same ``folds`` grouped folds as :func:`cross_validate`'s, so the
    first-pass scores it gives match), and the model keeps the counts of all ``documents``.
    """
    config = config or DisambiguatorConfig()
    priors = _fold_priors(documents, config, _folds(documents, folds)) if config.mention_prior else None
    raw = documents
    if priors is not None:
        documents = priors.out_of_fold(documents)
    features, labels = stack(documents)
    sizes = [n for d in documents for n in d.group_sizes]
    if not config.collective:
        model = Disambiguator.train(features, labels, config, group_sizes=sizes)
    else:
        model = Disambiguator.train(features, labels, config, group_sizes=sizes, columns=FIRST_PASS_COLUMNS)
        if first_pass_scores is None:
            first_pass_scores = out_of_fold_first_pass(raw, config, folds=folds)
        del features
        second = np.concatenate([d.collective(s) for d, s in zip(documents, first_pass_scores, strict=True)])
        model.second = Disambiguator.train(second, labels, config, group_sizes=sizes)
    if priors is not None:
        model.mention_prior = priors.total
    return model


def _folds(documents: Sequence[TrainingDocument], folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold

    groups = [d.group for d in documents]
    n_splits = min(folds, len(set(groups)))
    if n_splits < 2:
        raise ValueError("cross-validation needs documents from at least two groups")
    return list(GroupKFold(n_splits=n_splits).split(np.arange(len(documents)), groups=groups))


def _first_pass_models(
    documents: Sequence[TrainingDocument],
    config: DisambiguatorConfig,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    priors: FoldPriors | None = None,
) -> list[Disambiguator]:
    """One first-pass model per fold, trained on the fold's training part (prior columns from the
    folds other than the document's own and the held-out one)."""
    models = []
    for fold, (train_idx, _test_idx) in enumerate(splits):
        part = [documents[i] for i in train_idx]
        if priors is not None:
            part = priors.out_of_fold(part, fold)
        features, labels = stack(part)
        sizes = [n for d in part for n in d.group_sizes]
        models.append(Disambiguator.train(features, labels, config, group_sizes=sizes, columns=FIRST_PASS_COLUMNS))
    return models


def _out_of_fold(
    documents: Sequence[TrainingDocument],
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    models: Sequence[Disambiguator],
    priors: FoldPriors | None = None,
) -> list[np.ndarray]:
    scores: list[np.ndarray] = [np.zeros(0)] * len(documents)
    for fold, ((_train_idx, test_idx), model) in enumerate(zip(splits, models, strict=True)):
        table = priors.without(fold) if priors is not None else None
        for i in test_idx:
            scores[i] = model.score(documents[i].with_prior(table).prepared.features)
    return scores


def out_of_fold_first_pass(
    documents: Sequence[TrainingDocument], config: DisambiguatorConfig, *, folds: int = 5
) -> list[np.ndarray]:
    """First-pass scores of every document from a model not trained on it (folds by group, see :func:`_folds`)."""
    splits = _folds(documents, folds)
    priors = _fold_priors(documents, config, splits)
    return _out_of_fold(documents, splits, _first_pass_models(documents, config, splits, priors), priors)


def evaluate_prepared(
    linker: EntityLinker,
    documents: Sequence[TrainingDocument],
    scores: Sequence[np.ndarray],
    options: LinkOptions,
    ranked: Sequence[Sequence[tuple[Candidate, ...]]] | None = None,
) -> dict[str, EvaluationResult]:
    """ED results per dataset (and ``all``) of given per-document scores; e2e results for detected documents.

    ``ranked`` is each document's :meth:`EntityLinker.rank` of its scores, if the caller has it already.
    """
    results: dict[str, EvaluationResult] = {}
    rankings = ranked if ranked is not None else [None] * len(documents)
    for doc, doc_scores, doc_ranked in zip(documents, scores, rankings, strict=True):
        mode = "e2e" if doc.detected else "ed"
        links = linker.decide(doc.prepared, doc_scores, options, detected=doc.detected, ranked=doc_ranked)
        for key in (doc.dataset, "all"):
            score_document(doc.document, links, mode, results.setdefault(key, EvaluationResult(mode)))
    return results


def _rule(threshold: float, margin: float, coreference: bool) -> LinkOptions:
    """Options that apply one NIL rule (for scoring out-of-fold or held-out documents)."""
    return LinkOptions(nil_threshold=threshold, nil_margin=margin, coreference=coreference, top_candidates=30)


def _choose_rule(
    linker: EntityLinker,
    documents: Sequence[TrainingDocument],
    scores: Sequence[np.ndarray],
    coreference: bool,
    thresholds: Sequence[float] = THRESHOLDS,
) -> tuple[float, float, dict[tuple[float, float], float]]:
    """The NIL rule (threshold, margin) chosen by F1 over ``documents``, and F1 by rule.

    The margin is the best rule's (among ties the one that makes fewer NILs: lower threshold,
    then smaller margin); the threshold is the median of the thresholds that come within
    :data:`PLATEAU` of the best F1 at that margin, the middle of the flat top of the curve rather
    than its noisy arg-max.
    """
    ranked = [linker.rank(doc.prepared, doc_scores) for doc, doc_scores in zip(documents, scores, strict=True)]
    by_rule: dict[tuple[float, float], float] = {}
    for m in MARGINS:
        for t in thresholds:
            rule = _rule(t, m, coreference)
            by_rule[(t, m)] = evaluate_prepared(linker, documents, scores, rule, ranked)["all"].counts.f1
    threshold, margin = plateau_rule(by_rule)
    return threshold, margin, by_rule


def plateau_rule(by_rule: dict[tuple[float, float], float], plateau: float = PLATEAU) -> tuple[float, float]:
    """The (threshold, margin) that :func:`_choose_rule` picks from F1 by rule.

    Example:
        >>> curve = {(0.0, 1.0): 0.80, (0.1, 1.0): 0.849, (0.2, 1.0): 0.85, (0.3, 1.0): 0.848, (0.4, 1.0): 0.84}
        >>> plateau_rule(curve)
        (0.2, 1.0)
    """
    _, margin = max(by_rule, key=lambda rule: (round(by_rule[rule], 6), -rule[0], -rule[1]))
    top = max(by_rule.values())
    near = sorted(t for (t, m), f1 in by_rule.items() if m == margin and f1 >= top - plateau)
    return near[len(near) // 2], margin


def cross_validate(
    linker: EntityLinker,
    documents: Sequence[TrainingDocument],
    config: DisambiguatorConfig | None = None,
    *,
    folds: int = 5,
    coreference: bool = True,
    detected: Sequence[TrainingDocument] = (),
) -> CrossValidation:
    """Document-grouped k-fold CV: out-of-fold ED F1 per dataset, and the NIL rule that maximizes it.

    F1 is the data README's ED F1 (a NIL prediction costs recall, a wrong entity costs both).
    For a collective config the first pass's out-of-fold scores feed the second pass's
    features, in CV and (kept in ``first_pass_scores``) for the final fit.

    ``detected`` documents (the same documents prepared with ``detected=True``) are scored by the
    model of the fold that holds their document out; the NIL rule for detected mentions is the one
    that maximizes their end-to-end F1. They are not trained on.
    """
    config = config or DisambiguatorConfig()
    splits = _folds(documents, folds)
    priors = _fold_priors(documents, config, splits)
    first_models = _first_pass_models(documents, config, splits, priors) if config.collective else None
    first = _out_of_fold(documents, splits, first_models, priors) if first_models is not None else None
    oof: list[np.ndarray] = [np.zeros(0)] * len(documents)
    detected_oof: list[np.ndarray | None] = [None] * len(detected)
    for fold, (train_idx, test_idx) in enumerate(splits):
        logger.info("cross-validation: fold %d/%d (%d training documents)", fold + 1, len(splits), len(train_idx))
        part = [documents[i] for i in train_idx]
        held_out = {documents[i].group for i in test_idx}
        extra = [j for j, d in enumerate(detected) if d.group in held_out]
        # the held-out documents' prior comes from the training part's counts only
        table = priors.without(fold) if priors is not None else None
        if first is None or first_models is None:
            # (its own prior out of fold within ``part``; the saved table is ``part``'s counts)
            model = train_disambiguator(part, config, folds=folds)
            for i in test_idx:
                oof[i] = _model_scores(model, documents[i])
            for j in extra:
                detected_oof[j] = _model_scores(model, detected[j])
        else:
            trained = priors.out_of_fold(part, fold) if priors is not None else part
            features = np.concatenate([d.collective(first[i]) for i, d in zip(train_idx, trained, strict=True)])
            labels = np.concatenate([d.labels for d in trained])
            sizes = [n for d in trained for n in d.group_sizes]
            del trained
            second = Disambiguator.train(features, labels, config, group_sizes=sizes)
            del features
            for i in test_idx:
                oof[i] = second.score(documents[i].with_prior(table).collective(first[i]))
            for j in extra:
                held = detected[j].with_prior(table)
                first_scores = first_models[fold].score(held.prepared.features)
                detected_oof[j] = second.score(held.collective(first_scores))
    originals = [i for i, d in enumerate(documents) if not d.augmented]
    scores = [oof[i] for i in originals]
    kept = [documents[i] for i in originals]
    best, best_margin, by_rule = _choose_rule(linker, kept, scores, coreference)
    gold_rule = _rule(best, best_margin, coreference)
    results = evaluate_prepared(linker, kept, scores, gold_rule)
    cv = CrossValidation(
        threshold=best,
        margin=best_margin,
        f1_by_dataset={k: round(v.counts.f1, 4) for k, v in results.items() if k != "all"},
        f1_overall=round(results["all"].counts.f1, 4),
        f1_by_threshold={t: f1 for (t, m), f1 in by_rule.items() if m == 1.0},
        first_pass_scores=first,
    )
    logger.info(
        "cross-validation: F1 %.4f with NIL below %.2f and lead < %.2f (%s)",
        cv.f1_overall,
        best,
        best_margin,
        cv.f1_by_dataset,
    )
    if detected:
        missing = [detected[j].document.doc_id for j, s in enumerate(detected_oof) if s is None]
        if missing:
            raise ValueError(f"detected documents without a gold-span counterpart: {', '.join(missing[:5])}")
        detected_scores = [s for s in detected_oof if s is not None]
        threshold, margin, _ = _choose_rule(linker, detected, detected_scores, coreference, THRESHOLDS_DETECTED)
        e2e = evaluate_prepared(linker, detected, detected_scores, _rule(threshold, margin, coreference))
        cv.detected_threshold, cv.detected_margin = threshold, margin
        cv.e2e_f1_by_dataset = {k: round(v.counts.f1, 4) for k, v in e2e.items() if k != "all"}
        cv.e2e_f1_overall = round(e2e["all"].counts.f1, 4)
        cv.e2e_f1_gold_rule = round(evaluate_prepared(linker, detected, detected_scores, gold_rule)["all"].counts.f1, 4)
        logger.info(
            "cross-validation, detected mentions: e2e F1 %.4f with NIL below %.2f and lead < %.2f (%s); "
            "%.4f with the gold-span rule",
            cv.e2e_f1_overall,
            threshold,
            margin,
            cv.e2e_f1_by_dataset,
            cv.e2e_f1_gold_rule,
        )
    return cv


@dataclass
class Transfer:
    """Leave-one-dataset-out ED F1: each dataset scored by a model trained on the others only.

    Document-grouped CV scores documents of datasets the model was trained on; a user's own data
    is another dataset. Training on all but one set and scoring that set (originals only)
    estimates how the linker carries over to data it was not fitted to.
    """

    f1_by_dataset: dict[str, float] = field(default_factory=dict)
    f1_overall: float = 0.0
    e2e_f1_by_dataset: dict[str, float] = field(default_factory=dict)
    e2e_f1_overall: float | None = None
    e2e_f1_gold_rule: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"transfer_f1": self.f1_overall, "transfer_f1_by_dataset": self.f1_by_dataset}
        if self.e2e_f1_overall is not None:
            data.update(
                transfer_e2e_f1=self.e2e_f1_overall,
                transfer_e2e_f1_by_dataset=self.e2e_f1_by_dataset,
                transfer_e2e_f1_gold_rule=self.e2e_f1_gold_rule,
            )
        return data


def leave_one_dataset_out(
    linker: EntityLinker,
    documents: Sequence[TrainingDocument],
    config: DisambiguatorConfig | None = None,
    *,
    folds: int = 5,
    coreference: bool = True,
    detected: Sequence[TrainingDocument] = (),
) -> Transfer:
    """Train on every dataset but one (NIL rule by CV on those), score the one left out; for each dataset.

    With ``detected`` documents, the left-out set's detected mentions are scored end to end too,
    with the detected-mention NIL rule chosen on the other sets, and (for comparison) with the
    gold-span rule.

    Documents prepared with prior candidates (:func:`with_prior_candidates`) keep the candidates
    their own set's other folds proposed; the left-out set's prior columns count the other sets
    only, so such a candidate enters with its prior columns at zero.
    """
    config = config or DisambiguatorConfig()
    datasets = sorted({d.dataset for d in documents})
    if len(datasets) < 2:
        raise ValueError("leave-one-dataset-out needs documents from at least two datasets")
    overall, e2e_overall, e2e_gold_rule = PRFCounts(), PRFCounts(), PRFCounts()
    by_dataset: dict[str, float] = {}
    e2e_by_dataset: dict[str, float] = {}
    for held in datasets:
        logger.info("leave-one-dataset-out: training without %s", held)
        train = [d for d in documents if d.dataset != held]
        scored = [d for d in documents if d.dataset == held and not d.augmented]
        train_detected = [d for d in detected if d.dataset != held]
        cv = cross_validate(linker, train, config, folds=folds, coreference=coreference, detected=train_detected)
        model = train_disambiguator(train, config, first_pass_scores=cv.first_pass_scores, folds=folds)
        options = _rule(cv.threshold, cv.margin, coreference)
        result = evaluate_prepared(linker, scored, [_model_scores(model, d) for d in scored], options)["all"]
        by_dataset[held] = round(result.counts.f1, 4)
        overall += result.counts
        held_detected = [d for d in detected if d.dataset == held]
        if held_detected and cv.detected_rule is not None:
            scores = [_model_scores(model, d) for d in held_detected]
            e2e = evaluate_prepared(linker, held_detected, scores, _rule(*cv.detected_rule, coreference))["all"].counts
            e2e_by_dataset[held] = round(e2e.f1, 4)
            e2e_overall += e2e
            e2e_gold_rule += evaluate_prepared(linker, held_detected, scores, options)["all"].counts
    transfer = Transfer(by_dataset, round(overall.f1, 4))
    logger.info("leave-one-dataset-out: F1 %.4f (%s)", transfer.f1_overall, by_dataset)
    if e2e_by_dataset:
        transfer.e2e_f1_by_dataset = e2e_by_dataset
        transfer.e2e_f1_overall = round(e2e_overall.f1, 4)
        transfer.e2e_f1_gold_rule = round(e2e_gold_rule.f1, 4)
        logger.info(
            "leave-one-dataset-out, detected mentions: e2e F1 %.4f (%s); with the gold-span NIL rule %.4f",
            transfer.e2e_f1_overall,
            e2e_by_dataset,
            transfer.e2e_f1_gold_rule,
        )
    return transfer


def _model_scores(model: Disambiguator, document: TrainingDocument) -> np.ndarray:
    """A trained model's scores of a document it was not trained on (prior columns from its counts)."""
    document = document.with_prior(model.mention_prior)
    first = model.score(document.prepared.features)
    return model.second.score(document.collective(first)) if model.second is not None else first


@dataclass(frozen=True)
class LinkerTrainingConfig:
    """How :func:`train_linker` trains.

    Attributes:
        model: the disambiguator's type and hyperparameters.
        folds: cross-validation folds, grouped by document (at least 2).
        cross_validate: choose the NIL rule by cross-validation and record CV metrics; without it
            the model keeps the default rule (NIL never) and has no metrics (for tiny demo sets).
        augment: also train on short-name copies of the documents (:func:`shorten_person_mentions`).
        detected_nil_rule: give detected mentions their own NIL rule, chosen by end-to-end F1 on
            the training documents (off by default: with partial annotations it learns to abstain).
        transfer: also score each benchmark with a model trained on the others only
            (:func:`leave_one_dataset_out`; needs two or more benchmarks).
        drift_sample: training documents linked for the drift reference.
    """

    model: DisambiguatorConfig = field(default_factory=DisambiguatorConfig)
    folds: int = 5
    cross_validate: bool = True
    augment: bool = True
    detected_nil_rule: bool = False
    transfer: bool = False
    drift_sample: int = 60


@dataclass(eq=False)
class TrainedLinker:
    """A trained linker and what training measured; :meth:`save` writes its model directory.

    Attributes:
        linker: the linker the model was trained for, with the trained model as its scorer.
        model: the trained disambiguator (NIL rule and metrics set).
        config: how it was trained.
        cv: out-of-fold results (None without cross-validation).
        transfer: leave-one-dataset-out results (None unless asked for).
        drift_reference: histograms of the drift features on the training documents.
    """

    linker: EntityLinker
    model: Disambiguator
    config: LinkerTrainingConfig
    cv: CrossValidation | None = None
    transfer: Transfer | None = None
    drift_reference: dict[str, Histogram] = field(default_factory=dict)

    def save(self, directory: str | Path, *, inputs: dict[str, Any] | None = None, overwrite: bool = False) -> Manifest:
        """Write the model directory (kind ``linker``): the model, its drift reference and a manifest.

        The manifest's parents are the KB and the encoder; ``inputs`` describes the training files.
        """
        linker = self.linker
        kb_id = linker.kb.manifest.content_id if linker.kb.manifest is not None else linker.kb.content_id
        return self.model.save(
            directory,
            parents={"kb": kb_id, "encoder": linker.encoder.checksum},
            params={
                "augment": self.config.augment,
                "detected_nil_rule": self.config.detected_nil_rule,
                "folds": self.config.folds,
                "max_context_chars": linker.config.max_context_chars,
                "candidates": linker.config.candidates.__dict__,
                "encoder": linker.encoder.name,
            },
            inputs=inputs or {},
            overwrite=overwrite,
            drift_reference=self.drift_reference,
        )


def train_linker(
    linker: EntityLinker,
    benchmarks: Mapping[str, Sequence[LinkingDocument]] | Sequence[tuple[str, Sequence[LinkingDocument]]],
    config: LinkerTrainingConfig | None = None,
) -> TrainedLinker:
    """Train a disambiguator for ``linker`` on benchmark documents: the one training entry point.

    ``benchmarks`` maps a dataset name to its documents (gold mentions with entities); the name
    groups documents for leave-one-dataset-out and the per-dataset metrics. Steps: prepare every
    document on its gold spans (and its short-name copies), and on the mentions the detector
    finds; cross-validate by document to choose the NIL rule (and one for detected mentions);
    fit on everything; set the rule and record the CV (and transfer) metrics; link a sample of
    the documents for the drift reference. ``linker`` itself is not changed.

    Raises ``ValueError`` naming the bad setting (``folds``, ``transfer``) or for documents that
    cannot be trained on (one group only, no correct candidate).

    Example:
        >>> trained = train_linker(linker, {"oke2015": oke2015, "oke2016": oke2016})  # doctest: +SKIP
        >>> trained.model.nil_threshold, trained.cv.f1_overall  # doctest: +SKIP
    """
    config = config or LinkerTrainingConfig()
    pairs = list(benchmarks.items()) if isinstance(benchmarks, Mapping) else list(benchmarks)
    if not pairs:
        raise ValueError("benchmarks: no training documents")
    if config.cross_validate and config.folds < 2:
        raise ValueError("folds: must be at least 2")
    if config.transfer and (not config.cross_validate or len({name for name, _ in pairs}) < 2):
        raise ValueError("transfer: needs cross-validation and two or more benchmarks with different names")
    caller, linker = linker, linker.with_exact_search()  # candidates that do not depend on the CPU (EntitySearch)
    documents: list[TrainingDocument] = []
    detected: list[TrainingDocument] = []
    for name, originals in pairs:
        logger.info("preparing %s: %d documents (candidates and features)", name, len(originals))
        documents += prepare_documents(linker, originals, name)
        if config.augment:
            documents += prepare_documents(linker, shorten_person_mentions(originals, linker.kb), name)
        if config.cross_validate:
            # the detector's mentions of the same documents choose the NIL rule for detected mentions
            detected += prepare_documents(linker, originals, name, detected=True)
    if config.model.mention_prior and config.model.prior_candidates and linker.config.candidates.prior_k:
        # the folds cross-validation and the final fit will use (the same documents, the same split)
        priors = FoldPriors(documents, _folds(documents, config.folds))
        logger.info("adding candidates from out-of-fold annotation counts")
        documents = with_prior_candidates(linker, documents, priors)
        detected = with_prior_candidates(linker, detected, priors)
    cv = transfer = None
    if config.cross_validate:
        cv = cross_validate(linker, documents, config.model, folds=config.folds, detected=detected)
        model = train_disambiguator(documents, config.model, first_pass_scores=cv.first_pass_scores, folds=config.folds)
        detected_rule = cv.detected_rule if config.detected_nil_rule else None
        model = model.with_threshold(cv.threshold, cv.margin, detected=detected_rule)
        model.metrics = cv.to_dict()
        if config.transfer:
            transfer = leave_one_dataset_out(linker, documents, config.model, folds=config.folds, detected=detected)
            model.metrics.update(transfer.to_dict())
    else:
        model = train_disambiguator(documents, config.model, folds=config.folds)
    originals = [doc for _, docs in pairs for doc in docs]
    reference = linking_reference(linker.with_model(model), originals, sample=config.drift_sample)  # saved: exact
    trained = caller.with_model(model)
    return TrainedLinker(trained, model, config, cv, transfer, reference)
