"""Candidate generation: which KB entities a mention might name.

Five generators, merged in this order, deduplicated, capped at ``k`` (default 30):

1. alias lookup: the alias table's entries for the surface (exact, else its normalized key), in
   prior order;
2. the training annotations (a trained model's :class:`~linking.prior.MentionPrior`): the entities
   annotators most often gave the surface, ``prior_k`` of them, beyond the cap (aida_train's "China"
   is the People's Republic of China, which no alias table lists under "China");
3. name variants: entities whose shorter names match (surname, given name, name without its
   qualifier, acronym, KB aliases), most popular first — this reaches "Saddam Hussein" from
   "Saddam", which the alias top list may not hold;
4. fuzzy match on normalized name keys (misspellings), only when 1-3 found nothing;
5. dense retrieval: the entities whose name+description embeddings are nearest to the mention's
   context embedding, for mentions the name indexes miss or rank badly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from linking.entity_index import EntityIndex
from linking.kb import KnowledgeBase
from linking.prior import MentionPrior
from linking.types import Candidate


@dataclass(frozen=True)
class CandidateConfig:
    """How many candidates each generator may contribute.

    Attributes:
        k: the cap on merged candidates per mention.
        max_variants: the most name-variant candidates per mention.
        fuzzy_cutoff: the least rapidfuzz ratio (0-100) for a fuzzy key.
        dense_k: dense-retrieval candidates per mention (0 turns dense retrieval off).
        prior_k: candidates from the training annotations' counts per mention (0 turns them off).
    """

    k: int = 30
    max_variants: int = 20
    fuzzy_cutoff: float = 85.0
    dense_k: int = 5
    prior_k: int = 3


class CandidateGenerator:
    """Candidates for mentions from a :class:`KnowledgeBase` and, optionally, an :class:`EntityIndex`
    and the counts of a model's training annotations (``prior``).

    Example:
        >>> gen = CandidateGenerator(kb)  # doctest: +SKIP
        >>> [c.entity_id for c in gen.generate("Saddam")][:3]  # doctest: +SKIP
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        entity_index: EntityIndex | None = None,
        config: CandidateConfig | None = None,
        prior: MentionPrior | None = None,
    ) -> None:
        self.kb = kb
        self.entity_index = entity_index
        self.config = config or CandidateConfig()
        self.prior = prior

    def generate(self, surface: str, context_vector: np.ndarray | None = None) -> list[Candidate]:
        """Candidates for one mention; ``context_vector`` enables dense retrieval."""
        vectors = None if context_vector is None else np.asarray(context_vector, dtype=np.float32)[None, :]
        return self.generate_batch([surface], vectors)[0]

    def generate_batch(
        self,
        surfaces: Sequence[str],
        context_vectors: np.ndarray | None = None,
        *,
        prior: MentionPrior | None = None,
    ) -> list[list[Candidate]]:
        """Candidates for several mentions; dense retrieval runs as one FAISS search for all of them.

        ``prior`` replaces the generator's own annotation counts (training passes each document
        the counts of the other cross-validation folds, never its own).
        """
        prior = prior if prior is not None else self.prior
        dense_hits: list[list[tuple[str, float]]] = [[] for _ in surfaces]
        if self.entity_index is not None and context_vectors is not None and self.config.dense_k > 0 and surfaces:
            # Mentions of one sentence share its vector: search each distinct vector once.
            unique, inverse = np.unique(np.asarray(context_vectors, dtype=np.float32), axis=0, return_inverse=True)
            found = self.entity_index.nearest(unique, self.config.dense_k)
            dense_hits = [found[i] for i in np.asarray(inverse).reshape(-1)]
        return [self._merge(surface, hits, prior) for surface, hits in zip(surfaces, dense_hits, strict=True)]

    def _merge(
        self, surface: str, dense_hits: list[tuple[str, float]], prior: MentionPrior | None = None
    ) -> list[Candidate]:
        cfg = self.config
        merged: dict[str, Candidate] = {}

        def add(entity_id: str, source: str, *, beyond_cap: bool = False, **fields: Any) -> None:
            if entity_id not in self.kb:
                return
            current = merged.get(entity_id)
            if current is None:
                if len(merged) >= cfg.k and not beyond_cap:
                    return
                merged[entity_id] = Candidate(entity_id=entity_id, sources=(source,), **fields)
            elif source not in current.sources:
                updates = {k: v for k, v in fields.items() if getattr(current, k) is None}
                merged[entity_id] = replace(current, sources=(*current.sources, source), **updates)

        for entry in self.kb.alias_lookup(surface):
            add(entry.entity_id, "alias", alias_rank=entry.rank)
        if prior is not None and cfg.prior_k > 0:
            for entity_id in prior.top_entities(surface, cfg.prior_k):
                add(entity_id, "prior", beyond_cap=True)
        # Keep room for dense candidates: the name generators fill at most k - dense_k slots.
        name_budget = max(cfg.k - cfg.dense_k, 1)
        for entity_id in self.kb.variant_lookup(surface)[: cfg.max_variants]:
            if len(merged) >= name_budget and entity_id not in merged:
                break
            add(entity_id, "variant")
        if not merged:
            for key, score in self.kb.fuzzy_keys(surface, cutoff=cfg.fuzzy_cutoff):
                for entity_id in self.kb.key_entities(key)[:10]:
                    if len(merged) >= name_budget:
                        break
                    add(entity_id, "fuzzy", fuzzy_score=score)
        for entity_id, score in dense_hits:
            add(entity_id, "dense", dense_score=score)
        # Dense scores for name candidates are filled by the feature stage; keep generation cheap.
        return list(merged.values())
