"""Training and cross-validating the disambiguator on benchmark documents.

Training rows are every (gold mention, candidate) pair with label 1 for the gold entity. The NIL
threshold is tuned on out-of-fold scores: cross-validation folds are whole documents
(``GroupKFold``), so no document's mentions are both trained and scored on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linking.disambiguation import Disambiguator, DisambiguatorConfig
from linking.evaluation import EvaluationResult, score_document
from linking.pipeline import EntityLinker, LinkOptions, PreparedDocument
from linking.types import LinkingDocument, Mention

logger = logging.getLogger(__name__)

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.0, 0.51, 0.02))


@dataclass(frozen=True, eq=False)
class TrainingDocument:
    """A benchmark document prepared on its gold spans, with the gold entities and its set's name."""

    document: LinkingDocument
    prepared: PreparedDocument
    labels: np.ndarray
    dataset: str

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
    """Out-of-fold results: the chosen NIL threshold and ED scores per dataset and overall."""

    threshold: float
    f1_by_dataset: dict[str, float] = field(default_factory=dict)
    f1_overall: float = 0.0
    f1_by_threshold: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nil_threshold": self.threshold,
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
        out.append(TrainingDocument(document, prepared, labels, dataset))
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
    documents: Sequence[TrainingDocument], config: DisambiguatorConfig | None = None
) -> Disambiguator:
    """Fit a disambiguator on all rows of ``documents``."""
    features, labels = stack(documents)
    return Disambiguator.train(features, labels, config)


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
    """Document-grouped k-fold CV: out-of-fold ED F1 per dataset, and the NIL threshold that maximizes it."""
    from sklearn.model_selection import GroupKFold

    index = np.arange(len(documents))
    groups = [d.group for d in documents]
    oof: list[np.ndarray | None] = [None] * len(documents)
    for train_idx, test_idx in GroupKFold(n_splits=folds).split(index, groups=groups):
        model = train_disambiguator([documents[i] for i in train_idx], config)
        for i in test_idx:
            oof[i] = model.score(documents[i].prepared.features)
    originals = [i for i, d in enumerate(documents) if not d.augmented]
    scores = [oof[i] if oof[i] is not None else np.zeros(0) for i in originals]
    documents = [documents[i] for i in originals]
    by_threshold = {}
    for t in THRESHOLDS:
        results = evaluate_prepared(
            linker, documents, scores, LinkOptions(nil_threshold=t, coreference=coreference, top_candidates=30)
        )
        by_threshold[t] = results["all"].counts.f1
    best = max(by_threshold, key=lambda t: (by_threshold[t], -t))
    results = evaluate_prepared(
        linker, documents, scores, LinkOptions(nil_threshold=best, coreference=coreference, top_candidates=30)
    )
    cv = CrossValidation(
        threshold=best,
        f1_by_dataset={k: round(v.counts.f1, 4) for k, v in results.items() if k != "all"},
        f1_overall=round(results["all"].counts.f1, 4),
        f1_by_threshold=by_threshold,
    )
    logger.info("cross-validation: F1 %.4f at NIL threshold %.2f (%s)", cv.f1_overall, best, cv.f1_by_dataset)
    return cv


def shorten_person_mentions(documents: Sequence[LinkingDocument], kb: Any, *, seed: int = 13) -> list[LinkingDocument]:
    """Augmented copies of ``documents`` in which full person names are cut to one name.

    The training sets rarely call people by one name, the test sets often do ("David and
    Victoria ..."). In each copy, every gold mention whose surface is a two-or-more-word name of a
    person entity is replaced in the text by its given name or its surname (one the alias table
    knows, if any, so the gold entity competes with that name's usual referents; else either, by
    a seeded draw), and the offsets shift accordingly. Documents without such a mention are left
    out.
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
                known = [w for w in (words[0], words[-1]) if kb.has_exact_alias(w)]
                options = known if known else [words[0], words[-1]]
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
