"""A mention -> entity prior learned from gold annotations: how often a surface named each entity.

The KB's alias tables order candidates by Wikipedia anchors (the shared KB) or by in-link
popularity (the AIDA additions), not by how the training text uses a name. Counting the gold
(surface, entity) pairs of the training documents gives that usage: in aida_train "Leeds" is
mostly the football club (9 of 14), "England" the national cricket team about as often as the
country (62 and 66 of 144), and "Moscow" stands for Russia one time in six.
The counts are an anchor prior p(e|m) estimated on the training annotations, NIL included:

    p(e|m) = c(m, e) / (c(m) + 1)

where ``c(m)`` counts every gold mention of the normalized surface ``m`` (:func:`normalize_alias`),
NIL ones too, and the +1 shrinks a prior seen once away from certainty. It enters the
disambiguator as the columns :data:`linking.features.PRIOR_FEATURE_NAMES` (see :meth:`MentionPrior.fill`).

Leakage: a training document's own annotations must never reach its own features (the model would
learn to trust a prior that, on new text, is not that good). :mod:`linking.training` therefore
fills a training document's columns from the counts of the *other* cross-validation folds only,
and the saved model keeps the counts of all training documents for linking new text.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from linking.features import FEATURE_NAMES, PRIOR_FEATURE_NAMES
from linking.normalization import normalize_alias
from linking.types import Candidate, LinkingDocument, Mention

NIL_KEY = ""
"""The entity key of NIL mentions in the counts (no entity id is empty)."""

_PRIOR_COLUMNS = [FEATURE_NAMES.index(name) for name in PRIOR_FEATURE_NAMES]
_COLUMN = {name: i for i, name in enumerate(PRIOR_FEATURE_NAMES)}


class MentionPrior:
    """Counts of (normalized surface, entity or NIL) over gold mentions, and the feature columns they give.

    Counts add and subtract (``a + b``, ``a - b``), so per-fold tables can be combined into
    "every fold but this one" without recounting.

    Example:
        >>> from linking.types import GoldMention
        >>> text = "England beat Pakistan at Lord's."
        >>> document = LinkingDocument("1", text, (GoldMention(0, 7, "England", "England cricket team"),))
        >>> prior = MentionPrior.from_documents([document])
        >>> prior.count("ENGLAND", "England cricket team"), prior.count("england")
        (1, 1)
        >>> prior.probability("England", "England cricket team"), prior.probability("England", "England")
        (0.5, 0.0)
    """

    def __init__(self, counts: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self._counts: dict[str, dict[str, int]] = {}
        for surface, by_entity in (counts or {}).items():
            kept = {entity: int(n) for entity, n in by_entity.items() if n}
            if any(n < 0 for n in kept.values()):
                raise ValueError(f"mention prior: negative count for {surface!r}")
            if kept:
                self._counts[surface] = kept
        self._surface_total = {s: sum(c.values()) for s, c in self._counts.items()}
        entity_total: Counter[str] = Counter()
        # each surface's entities, most counted first (NIL left out); ties by entity id, so that the
        # table is the same whatever order it was counted in
        self._ranked: dict[str, list[str]] = {}
        for surface, by_entity in self._counts.items():
            entities = {e: n for e, n in by_entity.items() if e != NIL_KEY}
            entity_total.update(entities)
            if entities:
                self._ranked[surface] = sorted(entities, key=lambda e: (-entities[e], e))
        self._entity_total = dict(entity_total)

    @classmethod
    def from_documents(cls, documents: Iterable[LinkingDocument]) -> MentionPrior:
        """The counts of every gold mention of ``documents`` (NIL mentions under :data:`NIL_KEY`)."""
        counts: dict[str, Counter[str]] = {}
        for document in documents:
            for gold in document.mentions:
                surface = normalize_alias(document.text[gold.start : gold.end])
                if surface:
                    counts.setdefault(surface, Counter())[gold.entity_id or NIL_KEY] += 1
        return cls(counts)

    def _combined(self, other: MentionPrior, sign: int) -> MentionPrior:
        counts = {s: dict(c) for s, c in self._counts.items()}
        for surface, by_entity in other._counts.items():
            mine = counts.setdefault(surface, {})
            for entity, n in by_entity.items():
                mine[entity] = mine.get(entity, 0) + sign * n
        return MentionPrior(counts)

    def __add__(self, other: MentionPrior) -> MentionPrior:
        return self._combined(other, 1)

    def __sub__(self, other: MentionPrior) -> MentionPrior:
        """These counts without ``other``'s (which must be part of them: no count goes below zero)."""
        return self._combined(other, -1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MentionPrior) and self._counts == other._counts

    def __len__(self) -> int:
        """The number of gold mentions counted."""
        return sum(self._surface_total.values())

    def __repr__(self) -> str:
        return f"MentionPrior({len(self._counts)} surfaces, {len(self)} mentions)"

    def count(self, surface: str, entity_id: str | None = None) -> int:
        """Gold mentions of ``surface`` (normalized here) naming ``entity_id``; all of them when it is None."""
        key = normalize_alias(surface)
        if entity_id is None:
            return self._surface_total.get(key, 0)
        return self._counts.get(key, {}).get(entity_id, 0)

    def probability(self, surface: str, entity_id: str) -> float:
        """The smoothed prior c(m, e) / (c(m) + 1); 0 for a surface never seen."""
        key = normalize_alias(surface)
        return self._counts.get(key, {}).get(entity_id, 0) / (self._surface_total.get(key, 0) + 1)

    def top_entities(self, surface: str, k: int) -> list[str]:
        """The ``k`` entities the annotations gave ``surface`` (normalized here) most often, most first
        (ties by entity id); NIL is not an entity. These are candidates the alias tables may miss:
        aida_train writes "China" for the People's Republic of China, which the alias tables file
        under its full name."""
        return self._ranked.get(normalize_alias(surface), [])[: max(k, 0)]

    def columns(self, surfaces: Sequence[str], candidates: Sequence[Sequence[Candidate]]) -> np.ndarray:
        """The :data:`PRIOR_FEATURE_NAMES` columns of every (mention, candidate) row, mention by mention.

        ``surfaces`` are normalized already. Per row: the smoothed p(e|m) and its gap to the
        mention's best candidate, whether e is the surface's most counted entity, log(1 + c(m, e)),
        log(1 + c(m)), the surface's NIL share c(m, NIL) / (c(m) + 1), whether the surface was
        counted at all, and log(1 + c(e)) over every surface (how often the training text names e).
        """
        n_rows = sum(len(c) for c in candidates)
        out = np.zeros((n_rows, len(PRIOR_FEATURE_NAMES)), dtype=np.float32)
        col = _COLUMN
        row = 0
        for surface, cands in zip(surfaces, candidates, strict=True):
            lo, hi = row, row + len(cands)
            row = hi
            if lo == hi:
                continue
            block = out[lo:hi]
            for r, cand in enumerate(cands):
                n_entity = self._entity_total.get(cand.entity_id, 0)
                if n_entity:
                    block[r, col["prior_entity_frequency"]] = math.log1p(n_entity)
            total = self._surface_total.get(surface, 0)
            if not total:
                continue
            by_entity = self._counts[surface]
            argmax = self._ranked[surface][0] if surface in self._ranked else None
            pair_counts = np.asarray([by_entity.get(c.entity_id, 0) for c in cands], dtype=np.float32)
            probability = pair_counts / (total + 1)
            block[:, col["prior_prob"]] = probability
            block[:, col["prior_prob_gap"]] = probability - probability.max()
            block[:, col["prior_is_argmax"]] = [argmax is not None and c.entity_id == argmax for c in cands]
            block[:, col["prior_pair_log_count"]] = np.log1p(pair_counts)
            block[:, col["prior_surface_log_count"]] = math.log1p(total)
            block[:, col["prior_nil_share"]] = by_entity.get(NIL_KEY, 0) / (total + 1)
            block[:, col["prior_seen"]] = 1.0
        return out

    def fill(
        self, features: np.ndarray, mentions: Sequence[Mention], candidates: Sequence[Sequence[Candidate]]
    ) -> np.ndarray:
        """A copy of a document's feature rows with the prior columns set from these counts."""
        out = features.copy()
        if len(out):
            surfaces = [normalize_alias(m.surface) for m in mentions]
            out[:, _PRIOR_COLUMNS] = self.columns(surfaces, candidates)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"counts": {surface: {entity or "": count}}}``, surfaces sorted."""
        return {"counts": {s: dict(sorted(self._counts[s].items())) for s in sorted(self._counts)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MentionPrior:
        return cls(data["counts"])
