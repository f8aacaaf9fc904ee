"""Features of (mention, candidate) pairs for the disambiguator.

One row per pair, grouped by mention. The columns (``FEATURE_NAMES``):

* prior: the alias rank (1 = the alias table's first choice), its inverse, how many alias
  candidates the mention has, which generators proposed the pair, the entity's popularity (log)
  and its popularity rank among the mention's candidates;
* string: rapidfuzz ratio and token-set ratio of surface and name, exact name match, the surface
  being one word of the name;
* context: cosine of the mention's context embedding and the entity's name+description
  embedding, its rank and gap to the best in the group, and the same against the whole document;
* type cues: the mention's NER type, the entity's type, whether they agree;
* document coherence: how close the entity's embedding is to the other mentions' likely
  entities; how many other mentions have a candidate sharing a word of this entity's name the
  mention lacks ("David" -> David *Beckham* <- "Victoria" -> Victoria *Beckham*); whether those
  name words occur in the document; whether a longer mention of the document containing this one
  points to the entity (coreference cue, "Saddam" after "Saddam Hussein").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from rapidfuzz import fuzz

from linking.entity_index import EntityIndex
from linking.kb import KnowledgeBase
from linking.mentions import LABEL_TYPES
from linking.normalization import normalize_alias, strip_qualifier
from linking.types import Candidate, Mention

FEATURE_NAMES: tuple[str, ...] = (
    "alias_rank",
    "inv_alias_rank",
    "n_alias_candidates",
    "n_candidates",
    "from_alias",
    "from_variant",
    "from_fuzzy",
    "from_dense",
    "log_popularity",
    "popularity_rank",
    "str_ratio",
    "str_token_set",
    "exact_name",
    "surface_is_name_word",
    "surface_words",
    "ctx_sim",
    "ctx_sim_rank",
    "ctx_sim_gap",
    "doc_sim",
    "doc_sim_gap",
    "mention_type",
    "entity_type",
    "type_agreement",
    "coherence",
    "coherence_gap",
    "name_word_coherence",
    "extra_name_words",
    "extra_words_in_doc",
    "coref_support",
)
TYPE_CODES = {"person": 1, "place": 2, "organization": 3, "other": 4}
NO_RANK = 50.0
COHERENCE_TOP = 5
_STOP = frozenset({"of", "the", "and", "de", "la", "le", "in", "on", "at", "for", "a", "an", "von", "van", "jr", "sr"})


def mention_context(text: str, mention: Mention, window: int = 200) -> str:
    """The text around a mention (``window`` characters each side, cut at word boundaries)."""
    start = max(0, mention.start - window)
    end = min(len(text), mention.end + window)
    if start > 0:
        space = text.find(" ", start, mention.start)
        start = space + 1 if space >= 0 else start
    if end < len(text):
        space = text.rfind(" ", mention.end, end)
        end = space if space >= 0 else end
    return text[start:end].replace("\n", " ")


class FeatureExtractor:
    """Computes the feature matrix of one document's (mention, candidate) pairs."""

    def __init__(self, kb: KnowledgeBase, entity_index: EntityIndex) -> None:
        self.kb = kb
        self.entity_index = entity_index
        self._name_words: dict[str, tuple[str, ...]] = {}

    def name_words(self, entity_id: str) -> tuple[str, ...]:
        """Normalized words of the entity's name (qualifier stripped), cached."""
        words = self._name_words.get(entity_id)
        if words is None:
            words = tuple(normalize_alias(strip_qualifier(self.kb.entity(entity_id).name)).split())
            self._name_words[entity_id] = words
        return words

    def document_features(
        self,
        text: str,
        mentions: Sequence[Mention],
        candidates: Sequence[Sequence[Candidate]],
        context_vectors: np.ndarray,
    ) -> np.ndarray:
        """Rows for every (mention, candidate) pair, mention by mention, in candidate order."""
        n_pairs = sum(len(c) for c in candidates)
        out = np.zeros((n_pairs, len(FEATURE_NAMES)), dtype=np.float32)
        if n_pairs == 0:
            return out
        col = {name: i for i, name in enumerate(FEATURE_NAMES)}
        entity_ids = [c.entity_id for cands in candidates for c in cands]
        vectors = self.entity_index.matrix(entity_ids)
        groups = []
        row = 0
        for cands in candidates:
            groups.append((row, row + len(cands)))
            row += len(cands)
        mention_of_row = np.repeat(np.arange(len(mentions)), [len(c) for c in candidates])

        # context and document similarity
        ctx = np.einsum("ij,ij->i", vectors, context_vectors[mention_of_row]) if len(context_vectors) else 0.0
        doc_vector = context_vectors.mean(axis=0)
        norm = float(np.linalg.norm(doc_vector))
        doc_sim = vectors @ (doc_vector / norm) if norm > 0 else np.zeros(n_pairs, dtype=np.float32)
        out[:, col["ctx_sim"]] = ctx
        out[:, col["doc_sim"]] = doc_sim

        surfaces = [normalize_alias(m.surface) for m in mentions]
        surface_words = [set(s.split()) for s in surfaces]
        doc_words = set(normalize_alias(text).split())
        coherence = self._embedding_coherence(surfaces, groups, vectors)
        word_mentions = self._word_mentions(surfaces, candidates)
        coref_targets = self._coref_targets(surfaces, candidates)

        for i, (mention, cands) in enumerate(zip(mentions, candidates, strict=True)):
            lo, hi = groups[i]
            if lo == hi:
                continue
            n_alias = sum(1 for c in cands if c.alias_rank is not None)
            popularity = [self.kb.popularity(c.entity_id) for c in cands]
            pop_order = np.argsort(-np.asarray(popularity), kind="stable")
            pop_rank = np.empty(len(cands), dtype=np.float32)
            pop_rank[pop_order] = np.arange(1, len(cands) + 1)
            mention_type = LABEL_TYPES.get(mention.label or "", None)
            distinct_others = {s for j, s in enumerate(surfaces) if s != surfaces[i]}
            for offset, cand in enumerate(cands):
                r = lo + offset
                name = self.kb.entity(cand.entity_id).name
                name_key = normalize_alias(strip_qualifier(name))
                words = self.name_words(cand.entity_id)
                rank = float(cand.alias_rank) if cand.alias_rank is not None else NO_RANK
                out[r, col["alias_rank"]] = rank
                out[r, col["inv_alias_rank"]] = 1.0 / rank if cand.alias_rank is not None else 0.0
                out[r, col["n_alias_candidates"]] = n_alias
                out[r, col["n_candidates"]] = len(cands)
                out[r, col["from_alias"]] = "alias" in cand.sources
                out[r, col["from_variant"]] = "variant" in cand.sources
                out[r, col["from_fuzzy"]] = "fuzzy" in cand.sources
                out[r, col["from_dense"]] = "dense" in cand.sources
                out[r, col["log_popularity"]] = math.log1p(popularity[offset])
                out[r, col["popularity_rank"]] = pop_rank[offset]
                out[r, col["str_ratio"]] = fuzz.ratio(surfaces[i], name_key) / 100.0
                out[r, col["str_token_set"]] = fuzz.token_set_ratio(surfaces[i], name_key) / 100.0
                out[r, col["exact_name"]] = surfaces[i] == name_key
                out[r, col["surface_is_name_word"]] = len(words) > 1 and surfaces[i] in words
                out[r, col["surface_words"]] = len(surface_words[i])
                entity_type = self.kb.entity_type(cand.entity_id)
                out[r, col["mention_type"]] = TYPE_CODES.get(mention_type or "", 0)
                out[r, col["entity_type"]] = TYPE_CODES[entity_type]
                if mention_type is not None and mention_type != "other" and entity_type != "other":
                    out[r, col["type_agreement"]] = 1.0 if mention_type == entity_type else -1.0
                extra = [w for w in words if w not in surface_words[i] and w not in _STOP and len(w) > 1]
                out[r, col["extra_name_words"]] = len(extra)
                if extra:
                    out[r, col["extra_words_in_doc"]] = sum(w in doc_words for w in extra) / len(extra)
                    supporters = set()
                    for w in extra:
                        supporters |= word_mentions.get(w, set())
                    supporters = {surfaces[j] for j in supporters} & distinct_others
                    out[r, col["name_word_coherence"]] = len(supporters)
                out[r, col["coref_support"]] = cand.entity_id in coref_targets[i]
            out[lo:hi, col["coherence"]] = coherence[lo:hi]
            out[lo:hi, col["coherence_gap"]] = coherence[lo:hi] - coherence[lo:hi].max()
            group_ctx = out[lo:hi, col["ctx_sim"]]
            order = np.argsort(-group_ctx, kind="stable")
            ranks = np.empty(hi - lo, dtype=np.float32)
            ranks[order] = np.arange(1, hi - lo + 1)
            out[lo:hi, col["ctx_sim_rank"]] = ranks
            out[lo:hi, col["ctx_sim_gap"]] = group_ctx - group_ctx.max()
            group_doc = out[lo:hi, col["doc_sim"]]
            out[lo:hi, col["doc_sim_gap"]] = group_doc - group_doc.max()
        return out

    def _embedding_coherence(
        self, surfaces: list[str], groups: list[tuple[int, int]], vectors: np.ndarray
    ) -> np.ndarray:
        """Mean over the other mentions (distinct surfaces) of the best cosine to their top candidates."""
        n_pairs = vectors.shape[0]
        coherence = np.zeros(n_pairs, dtype=np.float32)
        by_surface: dict[str, list[int]] = defaultdict(list)
        for i, (lo, hi) in enumerate(groups):
            if hi > lo:
                by_surface[surfaces[i]].append(i)
        if len(by_surface) < 2:
            return coherence
        # one representative mention per distinct surface: its top candidates in prior order
        reps = {s: idx[0] for s, idx in by_surface.items()}
        rep_rows = {
            s: list(range(groups[i][0], min(groups[i][1], groups[i][0] + COHERENCE_TOP))) for s, i in reps.items()
        }
        all_rows = [r for rows in rep_rows.values() for r in rows]
        sims = vectors @ vectors[all_rows].T  # (n_pairs, n_top_rows)
        column = 0
        surface_best: dict[str, np.ndarray] = {}
        for s, rows in rep_rows.items():
            surface_best[s] = sims[:, column : column + len(rows)].max(axis=1)
            column += len(rows)
        stacked = np.stack([surface_best[s] for s in rep_rows], axis=1)  # (n_pairs, n_surfaces)
        surface_index = {s: k for k, s in enumerate(rep_rows)}
        total = stacked.sum(axis=1)
        for i, (lo, hi) in enumerate(groups):
            if hi == lo:
                continue
            own = surface_index.get(surfaces[i])
            own_part = stacked[lo:hi, own] if own is not None else 0.0
            coherence[lo:hi] = (total[lo:hi] - own_part) / (len(rep_rows) - 1)
        return coherence

    def _word_mentions(self, surfaces: list[str], candidates: Sequence[Sequence[Candidate]]) -> dict[str, set[int]]:
        """Name word -> the mentions that have a candidate (top 10) whose name holds it."""
        index: dict[str, set[int]] = defaultdict(set)
        for i, cands in enumerate(candidates):
            for cand in cands[:10]:
                for w in self.name_words(cand.entity_id):
                    if w not in _STOP and len(w) > 1:
                        index[w].add(i)
        return index

    def _coref_targets(self, surfaces: list[str], candidates: Sequence[Sequence[Candidate]]) -> list[set[str]]:
        """Per mention, the entities longer mentions containing it point to (their first candidate or exact name)."""
        targets: list[set[str]] = [set() for _ in surfaces]
        words = [s.split() for s in surfaces]
        for i, wi in enumerate(words):
            if not wi:
                continue
            for j, wj in enumerate(words):
                if len(wj) <= len(wi) or not set(wi) <= set(wj) or not candidates[j]:
                    continue
                targets[i].add(candidates[j][0].entity_id)
                for cand in candidates[j]:
                    if normalize_alias(strip_qualifier(self.kb.entity(cand.entity_id).name)) == surfaces[j]:
                        targets[i].add(cand.entity_id)
        return targets
