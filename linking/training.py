"""Training and cross-validating the disambiguator on benchmark documents.

Training rows are every (gold mention, candidate) pair with label 1 for the gold entity. The NIL
threshold is tuned on out-of-fold scores: cross-validation folds are whole documents
(``GroupKFold``), so no document's mentions are both trained and scored on.

A collective (two-pass) model is stacked: the second pass is trained on collective features
computed from *out-of-fold* first-pass scores, so it learns how far to trust first-pass picks of
documents the first pass has not seen, as at test time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linking.disambiguation import FIRST_PASS_COLUMNS, Disambiguator, DisambiguatorConfig
from linking.evaluation import EvaluationResult, PRFCounts, score_document
from linking.features import collective_features
from linking.normalization import normalize_alias
from linking.pipeline import EntityLinker, LinkOptions, PreparedDocument
from linking.types import LinkingDocument, Mention

logger = logging.getLogger(__name__)

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 0.51, 0.02))
MARGINS = (0.05, 0.1, 0.2, 0.3, 1.0)


@dataclass(frozen=True, eq=False)
class TrainingDocument:
    """A benchmark document prepared on its gold spans, with the gold entities and its set's name."""

    document: LinkingDocument
    prepared: PreparedDocument
    labels: np.ndarray
    dataset: str
    entity_vectors: np.ndarray

    def collective(self, first_scores: np.ndarray) -> np.ndarray:
        """The feature rows with the collective columns filled from ``first_scores``."""
        surfaces = [normalize_alias(m.surface) for m in self.prepared.mentions]
        return collective_features(
            self.prepared.features, self.prepared.groups(), surfaces, self.entity_vectors, first_scores
        )

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
        """The CV group: a document and its augmented copies fall in the same fold."""
        return f"{self.dataset}/{self.document.doc_id.split('#', 1)[0]}"


@dataclass
class CrossValidation:
    """Out-of-fold results: the chosen NIL rule (threshold, margin) and ED scores per dataset and overall."""

    threshold: float
    margin: float = 1.0
    f1_by_dataset: dict[str, float] = field(default_factory=dict)
    f1_overall: float = 0.0
    f1_by_threshold: dict[float, float] = field(default_factory=dict)
    first_pass_scores: list[np.ndarray] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "nil_threshold": float(self.threshold),
            "nil_margin": float(self.margin),
            "cv_f1": self.f1_overall,
            "cv_f1_by_dataset": self.f1_by_dataset,
        }


def gold_mentions(linker: EntityLinker, document: LinkingDocument) -> list[Mention]:
    """The document's gold spans as mentions, with NER labels as type cues."""
    mentions = [Mention(g.start, g.end, document.text[g.start : g.end]) for g in document.mentions]
    return linker.label_mentions(document.text, mentions)


def prepare_documents(
    linker: EntityLinker, documents: Sequence[LinkingDocument], dataset: str
) -> list[TrainingDocument]:
    """Candidates, features and 0/1 labels of every gold mention of ``documents``."""
    out = []
    for document in documents:
        prepared = linker.prepare(document.text, gold_mentions(linker, document))
        labels = np.zeros(len(prepared.features), dtype=np.int32)
        for gold, cands, (lo, _hi) in zip(document.mentions, prepared.candidates, prepared.groups(), strict=True):
            ids = [c.entity_id for c in cands]
            if gold.entity_id is not None and gold.entity_id in ids:
                labels[lo + ids.index(gold.entity_id)] = 1
        entity_ids = [c.entity_id for cands in prepared.candidates for c in cands]
        out.append(TrainingDocument(document, prepared, labels, dataset, linker.entity_index.matrix(entity_ids)))
    return out


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
    document, e.g. from :func:`cross_validate`; computed with ``folds`` document-grouped folds if
    not given).
    """
    config = config or DisambiguatorConfig()
    features, labels = stack(documents)
    sizes = [n for d in documents for n in d.group_sizes]
    if not config.collective:
        return Disambiguator.train(features, labels, config, group_sizes=sizes)
    model = Disambiguator.train(features, labels, config, group_sizes=sizes, columns=FIRST_PASS_COLUMNS)
    if first_pass_scores is None:
        first_pass_scores = out_of_fold_first_pass(documents, config, folds=folds)
    second = np.concatenate([d.collective(s) for d, s in zip(documents, first_pass_scores, strict=True)])
    model.second = Disambiguator.train(second, labels, config, group_sizes=sizes)
    return model


def _folds(documents: Sequence[TrainingDocument], folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold

    groups = [d.group for d in documents]
    n_splits = min(folds, len(set(groups)))
    if n_splits < 2:
        raise ValueError("cross-validation needs documents from at least two groups")
    return list(GroupKFold(n_splits=n_splits).split(np.arange(len(documents)), groups=groups))


def out_of_fold_first_pass(
    documents: Sequence[TrainingDocument], config: DisambiguatorConfig, *, folds: int = 5
) -> list[np.ndarray]:
    """First-pass scores of every document from a model not trained on it (document-grouped folds)."""
    scores: list[np.ndarray] = [np.zeros(0)] * len(documents)
    for train_idx, test_idx in _folds(documents, folds):
        part = [documents[i] for i in train_idx]
        features, labels = stack(part)
        sizes = [n for d in part for n in d.group_sizes]
        model = Disambiguator.train(features, labels, config, group_sizes=sizes, columns=FIRST_PASS_COLUMNS)
        for i in test_idx:
            scores[i] = model.score(documents[i].prepared.features)
    return scores


def evaluate_prepared(
    linker: EntityLinker,
    documents: Sequence[TrainingDocument],
    scores: Sequence[np.ndarray],
    options: LinkOptions,
) -> dict[str, EvaluationResult]:
    """ED results per dataset (and ``all``) of given per-document scores."""
    results: dict[str, EvaluationResult] = {}
    for doc, doc_scores in zip(documents, scores, strict=True):
        links = linker.decide(doc.prepared, doc_scores, options)
        for key in (doc.dataset, "all"):
            score_document(doc.document, links, "ed", results.setdefault(key, EvaluationResult("ed")))
    return results


def cross_validate(
    linker: EntityLinker,
    documents: Sequence[TrainingDocument],
    config: DisambiguatorConfig | None = None,
    *,
    folds: int = 5,
    coreference: bool = True,
) -> CrossValidation:
    """Document-grouped k-fold CV: out-of-fold ED F1 per dataset, and the NIL rule that maximizes it.

    F1 is the data README's ED F1 (a NIL prediction costs recall, a wrong entity costs both).
    For a collective config the first pass's out-of-fold scores feed the second pass's
    features, in CV and (kept in ``first_pass_scores``) for the final fit.
    """
    config = config or DisambiguatorConfig()
    splits = _folds(documents, folds)
    first = out_of_fold_first_pass(documents, config, folds=folds) if config.collective else None
    oof: list[np.ndarray] = [np.zeros(0)] * len(documents)
    for train_idx, test_idx in splits:
        part = [documents[i] for i in train_idx]
        if first is None:
            model = train_disambiguator(part, config)
            for i in test_idx:
                oof[i] = model.score(documents[i].prepared.features)
        else:
            features = np.concatenate([documents[i].collective(first[i]) for i in train_idx])
            labels = np.concatenate([documents[i].labels for i in train_idx])
            sizes = [n for d in part for n in d.group_sizes]
            second = Disambiguator.train(features, labels, config, group_sizes=sizes)
            for i in test_idx:
                oof[i] = second.score(documents[i].collective(first[i]))
    originals = [i for i, d in enumerate(documents) if not d.augmented]
    scores = [oof[i] for i in originals]
    kept = [documents[i] for i in originals]
    by_rule: dict[tuple[float, float], float] = {}
    for m in MARGINS:
        for t in THRESHOLDS:
            options = LinkOptions(nil_threshold=t, nil_margin=m, coreference=coreference, top_candidates=30)
            by_rule[(t, m)] = evaluate_prepared(linker, kept, scores, options)["all"].counts.f1
    # the best F1; among ties the rule that makes fewer NILs (lower threshold, then smaller margin)
    best, best_margin = max(by_rule, key=lambda rule: (round(by_rule[rule], 6), -rule[0], -rule[1]))
    options = LinkOptions(nil_threshold=best, nil_margin=best_margin, coreference=coreference, top_candidates=30)
    results = evaluate_prepared(linker, kept, scores, options)
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

    def to_dict(self) -> dict[str, Any]:
        return {"transfer_f1": self.f1_overall, "transfer_f1_by_dataset": self.f1_by_dataset}


def leave_one_dataset_out(
    linker: EntityLinker,
    documents: Sequence[TrainingDocument],
    config: DisambiguatorConfig | None = None,
    *,
    folds: int = 5,
    coreference: bool = True,
) -> Transfer:
    """Train on every dataset but one (NIL rule by CV on those), score the one left out; for each dataset."""
    config = config or DisambiguatorConfig()
    datasets = sorted({d.dataset for d in documents})
    if len(datasets) < 2:
        raise ValueError("leave-one-dataset-out needs documents from at least two datasets")
    overall = PRFCounts()
    by_dataset: dict[str, float] = {}
    for held in datasets:
        train = [d for d in documents if d.dataset != held]
        scored = [d for d in documents if d.dataset == held and not d.augmented]
        cv = cross_validate(linker, train, config, folds=folds, coreference=coreference)
        model = train_disambiguator(train, config, first_pass_scores=cv.first_pass_scores, folds=folds)
        scores = []
        for doc in scored:
            first = model.score(doc.prepared.features)
            scores.append(model.second.score(doc.collective(first)) if model.second is not None else first)
        options = LinkOptions(
            nil_threshold=cv.threshold, nil_margin=cv.margin, coreference=coreference, top_candidates=30
        )
        result = evaluate_prepared(linker, scored, scores, options)["all"]
        by_dataset[held] = round(result.counts.f1, 4)
        overall += result.counts
    transfer = Transfer(by_dataset, round(overall.f1, 4))
    logger.info("leave-one-dataset-out: F1 %.4f (%s)", transfer.f1_overall, by_dataset)
    return transfer


_SUFFIX = re.compile(r"^(?:[IVX]+|Jr|Sr)\.?,?$")


def shorten_person_mentions(documents: Sequence[LinkingDocument], kb: Any, *, seed: int = 13) -> list[LinkingDocument]:
    """Augmented copies of ``documents`` in which full person names are cut to one name.

    The training sets rarely call people by one name, the test sets often do ("David and
    Victoria ..."). In each copy, every gold mention whose surface is a two-or-more-word name of a
    person entity is replaced in the text by its given name or its surname (one the alias table
    knows, if any, so the gold entity competes with that name's usual referents; else either, by
    a seeded draw), and the offsets shift accordingly. Initials, particles and suffixes are not
    names: "F. W. de Klerk" becomes "Klerk", "Elizabeth II" "Elizabeth". Documents without such a
    mention are left out.
    """
    import random

    from linking.normalization import normalize_alias, strip_qualifier
    from linking.types import GoldMention

    rng = random.Random(seed)
    out = []
    for document in documents:
        pieces, mentions, cursor, shift, changed = [], [], 0, 0, False
        for gold in sorted(document.mentions, key=lambda g: g.start):
            surface = document.text[gold.start : gold.end]
            words = surface.split()
            replacement = surface
            if (
                gold.entity_id is not None
                and gold.entity_id in kb
                and kb.entity_type(gold.entity_id) == "person"
                and len(words) >= 2
                and normalize_alias(surface) == normalize_alias(strip_qualifier(kb.entity(gold.entity_id).name))
            ):
                # Prefer a short form the alias table knows, so that the gold entity competes with
                # that name's usual referents, as in the test sets ("Page" -> Page, Arizona).
                # names only: not a suffix or regnal number ("John Paul II"), an initial or a
                # particle ("F. W. de Klerk")
                names = [w for w in words if w[:1].isupper() and len(w.rstrip(".")) > 1 and not _SUFFIX.match(w)]
                names = names or words
                known = [w for w in (names[0], names[-1]) if kb.has_exact_alias(w)]
                options = known if known else [names[0], names[-1]]
                replacement = options[0] if len(options) == 1 or rng.random() < 0.5 else options[1]
                changed = True
            pieces.append(document.text[cursor : gold.start])
            pieces.append(replacement)
            start = gold.start + shift
            mentions.append(GoldMention(start, start + len(replacement), replacement, gold.entity_id))
            shift += len(replacement) - (gold.end - gold.start)
            cursor = gold.end
        if changed:
            pieces.append(document.text[cursor:])
            out.append(LinkingDocument(f"{document.doc_id}#short", "".join(pieces), tuple(mentions)))
    return out
