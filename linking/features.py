"""Features of (mention, candidate) pairs for the disambiguator.

One row per pair, grouped by mention. The columns (``FEATURE_NAMES``):

* prior: the alias rank (1 = the alias table's first choice), its inverse, how many alias
  candidates the mention has, which generators proposed the pair, the entity's popularity (log)
  and its popularity rank among the mention's candidates;
* string: rapidfuzz ratio and token-set ratio of surface and name, exact name match (qualifier
  stripped), the surface being one word of the name; whether the entity's title has a qualifier
  ("Contra (video game)", "Plains, Montana": by Wikipedia's naming, not the name's primary topic),
  whether the surface matches the whole title, and whether it is the name's acronym ("NATO" for
  North Atlantic Treaty Organisation, "U.N."), which the ratios score as a poor match;
* mention form: no capital letter ("director"), a pronoun ("he"), the share of capitalized
  words. Annotations that include pronouns and common nouns make many gold entities missing from
  the candidates; these columns let the model tell such mentions from proper names, so that its
  scores (and the NIL threshold on them) do not hedge on names for the sake of pronouns;
* context: cosine of the mention's context embedding and the entity's name+description
  embedding, its rank and gap to the best in the group, and the same against the whole document;
* type cues: the mention's NER type, the entity's type, whether they agree;
* document coherence: how close the entity's embedding is to the other mentions' likely
  entities; how many other mentions have a candidate sharing a word of this entity's name the
  mention lacks ("Steve" -> Steve *Waugh* <- "Mark" -> Mark *Waugh*); whether those
  name words occur in the document; whether a longer mention of the document containing this one
  points to the entity (coreference cue, "Saddam" after "Saddam Hussein");
* mention prior: how often the training annotations used the surface for the entity, p(e|m)
  counted on gold mentions (:data:`PRIOR_FEATURE_NAMES`, filled by :mod:`linking.prior`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from rapidfuzz import fuzz

from linking.entity_index import EntityIndex
from linking.kb import KnowledgeBase
from linking.mentions import LABEL_TYPES
from linking.normalization import NOT_NAME_WORDS, acronym, normalize_alias, strip_qualifier
from linking.types import Candidate, Mention

BASE_FEATURE_NAMES: tuple[str, ...] = (
    "alias_rank",
    "inv_alias_rank",
    "log_alias_rank",
    "is_rank1",
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
    "name_qualified",
    "exact_title",
    "acronym_match",
    "surface_is_name_word",
    "surname_match",
    "given_name_match",
    "surface_words",
    "surface_lowercase",
    "surface_pronoun",
    "surface_capitalized",
    "ctx_sim",
    "ctx_sim_rank",
    "ctx_sim_gap",
    "ctx_vs_first",
    "doc_sim",
    "doc_sim_rank",
    "doc_sim_gap",
    "doc_vs_first",
    "mention_type",
    "entity_type",
    "type_agreement",
    "coherence",
    "coherence_rank",
    "coherence_gap",
    "coherence_vs_first",
    "name_word_coherence",
    "extra_name_words",
    "extra_words_in_doc",
    "coref_support",
)
# Mention -> entity prior counted on the training annotations (:mod:`linking.prior`). Zero here:
# the extractor does not know the counts; the model that holds them fills these columns
# (:meth:`linking.prior.MentionPrior.fill`), and training fills them out of fold.
PRIOR_FEATURE_NAMES: tuple[str, ...] = (
    "prior_prob",
    "prior_prob_gap",
    "prior_is_argmax",
    "prior_pair_log_count",
    "prior_surface_log_count",
    "prior_nil_share",
    "prior_seen",
    "prior_entity_frequency",
)
BASE_FEATURE_NAMES += PRIOR_FEATURE_NAMES
# Second-pass (collective) columns: filled from a first-pass model's scores of the same document,
# see :func:`collective_features`. Zero in the first pass.
COLLECTIVE_FEATURE_NAMES: tuple[str, ...] = (
    "first_score",
    "first_score_gap",
    "first_rank",
    "resolved_coherence",
    "resolved_coherence_max",
    "resolved_coherence_rank",
    "resolved_coherence_gap",
    "resolved_coherence_vs_first",
)
FEATURE_NAMES: tuple[str, ...] = BASE_FEATURE_NAMES + COLLECTIVE_FEATURE_NAMES
TYPE_CODES = {"person": 1, "place": 2, "organization": 3, "other": 4}
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}
_CANDIDATE_COLUMNS = (
    "from_alias", "from_variant", "from_fuzzy", "from_dense", "str_ratio", "str_token_set", "exact_name",
    "name_qualified", "exact_title", "acronym_match", "surface_is_name_word", "surname_match", "given_name_match",
    "entity_type", "type_agreement", "extra_name_words", "extra_words_in_doc", "name_word_coherence", "coref_support",
)  # fmt: skip
"""The columns :meth:`FeatureExtractor.document_features` fills candidate by candidate."""
_VS_FIRST = {"ctx_sim": "ctx_vs_first", "doc_sim": "doc_vs_first", "coherence": "coherence_vs_first"}
NO_RANK = 50.0
COHERENCE_TOP = 5
_PRONOUN_WORDS = (
    "i me my mine myself you your yours yourself he him his himself she her hers herself it its itself "
    "we us our ours ourselves they them their theirs themselves"
)
PRONOUNS = frozenset(_PRONOUN_WORDS.split())


class FeatureExtractor:
    """Computes the feature matrix of one document's (mention, candidate) pairs."""

    def __init__(self, kb: KnowledgeBase, entity_index: EntityIndex) -> None:
        self.kb = kb
        self.entity_index = entity_index
        self._names: dict[str, tuple[tuple[str, ...], bool, str, str]] = {}

    def _name_keys(self, entity_id: str) -> tuple[tuple[str, ...], bool, str, str]:
        """Per entity, cached: its name's words (qualifier stripped), whether the title has a qualifier,
        the whole title normalized, and the name's acronym normalized ("" if it has none)."""
        keys = self._names.get(entity_id)
        if keys is None:
            name = self.kb.entity(entity_id).name
            base = strip_qualifier(name)
            keys = (
                tuple(normalize_alias(base).split()),
                base != name,
                normalize_alias(name),
                normalize_alias(acronym(base) or ""),
            )
            self._names[entity_id] = keys
        return keys

    def name_words(self, entity_id: str) -> tuple[str, ...]:
        """Normalized words of the entity's name (qualifier stripped), cached."""
        return self._name_keys(entity_id)[0]

    def document_features(
        self,
        text: str,
        mentions: Sequence[Mention],
        candidates: Sequence[Sequence[Candidate]],
        context_vectors: np.ndarray,
        doc_vector: np.ndarray | None = None,
    ) -> np.ndarray:
        """Rows for every (mention, candidate) pair, mention by mention, in candidate order.

        The collective columns (:data:`COLLECTIVE_FEATURE_NAMES`) are left at zero; a two-pass
        scorer fills them with :func:`collective_features`.
        """
        n_pairs = sum(len(c) for c in candidates)
        out = np.zeros((n_pairs, len(FEATURE_NAMES)), dtype=np.float32)
        if n_pairs == 0:
            return out
        col = _COLUMN
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
        if doc_vector is None:
            doc_vector = context_vectors.mean(axis=0)
        norm = float(np.linalg.norm(doc_vector))
        doc_sim = vectors @ (doc_vector / norm) if norm > 0 else np.zeros(n_pairs, dtype=np.float32)
        out[:, col["ctx_sim"]] = ctx
        out[:, col["doc_sim"]] = doc_sim

        surfaces = [normalize_alias(m.surface) for m in mentions]
        surface_words = [set(s.split()) for s in surfaces]
        doc_words = set(normalize_alias(text).split())
        coherence = self._embedding_coherence(surfaces, groups, vectors)
        out[:, col["coherence"]] = coherence
        word_mentions = self._word_mentions(surfaces, candidates)
        coref_targets = self._coref_targets(surfaces, candidates)

        for i, (mention, cands) in enumerate(zip(mentions, candidates, strict=True)):
            lo, hi = groups[i]
            if lo == hi:
                continue
            n_alias = sum(1 for c in cands if c.alias_rank is not None)
            popularity = np.asarray([self.kb.popularity(c.entity_id) for c in cands], dtype=np.float32)
            mention_type = LABEL_TYPES.get(mention.label or "", None)
            distinct_others = {s for s in surfaces if s != surfaces[i]}
            ranks = np.asarray(
                [float(c.alias_rank) if c.alias_rank is not None else NO_RANK for c in cands], dtype=np.float32
            )
            has_rank = np.asarray([c.alias_rank is not None for c in cands])
            block = out[lo:hi]
            block[:, col["alias_rank"]] = ranks
            block[:, col["inv_alias_rank"]] = np.where(has_rank, 1.0 / ranks, 0.0)
            block[:, col["log_alias_rank"]] = np.log(ranks)
            block[:, col["is_rank1"]] = ranks == 1.0
            block[:, col["n_alias_candidates"]] = n_alias
            block[:, col["n_candidates"]] = len(cands)
            block[:, col["log_popularity"]] = np.log1p(popularity)
            block[:, col["popularity_rank"]] = _ranks(popularity)
            block[:, col["surface_words"]] = len(surface_words[i])
            block[:, col["surface_lowercase"]] = mention.surface == mention.surface.lower()
            block[:, col["surface_pronoun"]] = surfaces[i] in PRONOUNS
            block[:, col["surface_capitalized"]] = _capitalized_share(mention.surface)
            # "NATO", "U.N.": two capitals or more, one word (not the pronoun "us")
            acronym_form = " " not in mention.surface.strip() and sum(ch.isupper() for ch in mention.surface) >= 2
            block[:, col["mention_type"]] = TYPE_CODES.get(mention_type or "", 0)
            # Per-candidate values are gathered by column and written once per column (a numpy
            # item assignment per cell cost more than the values themselves).
            cells: dict[str, list[float]] = {name: [] for name in _CANDIDATE_COLUMNS}
            surface = surfaces[i]
            for cand in cands:
                words, qualified, title_key, acronym_key = self._name_keys(cand.entity_id)
                name_key = " ".join(words)
                sources = cand.sources
                entity_type = self.kb.entity_type(cand.entity_id)
                person = entity_type == "person" and len(words) > 1
                extra = [w for w in words if w not in surface_words[i] and w not in NOT_NAME_WORDS and len(w) > 1]
                in_doc = coherent = 0.0
                if extra:
                    in_doc = sum(w in doc_words for w in extra) / len(extra)
                    supporters: set[int] = set()
                    for w in extra:
                        supporters |= word_mentions.get(w, set())
                    coherent = len({surfaces[j] for j in supporters} & distinct_others)
                agreement = 0.0
                if mention_type is not None and mention_type != "other" and entity_type != "other":
                    agreement = 1.0 if mention_type == entity_type else -1.0
                cells["from_alias"].append("alias" in sources)
                cells["from_variant"].append("variant" in sources)
                cells["from_fuzzy"].append("fuzzy" in sources)
                cells["from_dense"].append("dense" in sources)
                cells["str_ratio"].append(fuzz.ratio(surface, name_key) / 100.0)
                cells["str_token_set"].append(fuzz.token_set_ratio(surface, name_key) / 100.0)
                cells["exact_name"].append(surface == name_key)
                cells["name_qualified"].append(qualified)
                cells["exact_title"].append(surface == title_key)
                cells["acronym_match"].append(acronym_form and surface == acronym_key)
                cells["surface_is_name_word"].append(len(words) > 1 and surface in words)
                cells["surname_match"].append(person and surface == words[-1])
                cells["given_name_match"].append(person and surface == words[0])
                cells["entity_type"].append(TYPE_CODES[entity_type])
                cells["type_agreement"].append(agreement)
                cells["extra_name_words"].append(len(extra))
                cells["extra_words_in_doc"].append(in_doc)
                cells["name_word_coherence"].append(coherent)
                cells["coref_support"].append(cand.entity_id in coref_targets[i])
            for name, cell_values in cells.items():
                block[:, col[name]] = np.asarray(cell_values, dtype=np.float64)
            for name in ("ctx_sim", "doc_sim", "coherence"):
                values = block[:, col[name]]
                block[:, col[f"{name}_gap"]] = values - values.max()
                block[:, col[f"{name}_rank"]] = _ranks(values)
                block[:, col[_VS_FIRST[name]]] = values - values[0]
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
                    if w not in NOT_NAME_WORDS and len(w) > 1:
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


def _capitalized_share(surface: str) -> float:
    """The share of the surface's words that start with a capital letter (or digit)."""
    words = surface.split()
    return sum(w[0].isupper() or w[0].isdigit() for w in words) / len(words) if words else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based rank of each value, highest first (ties in order)."""
    order = np.argsort(-np.asarray(values), kind="stable")
    ranks = np.empty(len(values), dtype=np.float32)
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks


def collective_features(
    features: np.ndarray,
    groups: Sequence[tuple[int, int]],
    surfaces: Sequence[str],
    vectors: np.ndarray,
    first_scores: np.ndarray,
) -> np.ndarray:
    """A copy of ``features`` with the collective columns filled from first-pass scores.

    Coherence with *resolved* entities rather than with all candidates: each other mention (one
    per distinct surface) votes with its first-pass best entity, weighted by that entity's
    first-pass score, so "Jordan" next to "the Bulls" and "the NBA" is scored against the team
    and the league the first pass picked, not against every candidate of "Bulls" and "NBA".
    Also the first-pass score itself, its gap to the group's best and its rank (stacking: the
    second pass refines the first).

    Args:
        features: the base feature rows of one document.
        groups: row ranges of each mention's candidates.
        surfaces: normalized surface of each mention (mentions sharing a surface do not vote for each other).
        vectors: entity vectors of every row.
        first_scores: the first-pass score of every row.
    """
    out = features.copy()
    col = _COLUMN
    n_pairs = len(features)
    if n_pairs == 0:
        return out
    votes: dict[str, tuple[int, float]] = {}
    for i, (lo, hi) in enumerate(groups):
        if hi == lo:
            continue
        best = lo + int(np.argmax(first_scores[lo:hi]))
        if surfaces[i] not in votes or first_scores[best] > votes[surfaces[i]][1]:
            votes[surfaces[i]] = (best, float(first_scores[best]))
    voters = list(votes)
    if voters:
        rows = [votes[s][0] for s in voters]
        weights = np.asarray([votes[s][1] for s in voters], dtype=np.float32)
        sims = vectors @ vectors[rows].T  # (n_pairs, n_voters)
    for i, (lo, hi) in enumerate(groups):
        if hi == lo:
            continue
        scores = first_scores[lo:hi].astype(np.float32)
        out[lo:hi, col["first_score"]] = scores
        out[lo:hi, col["first_score_gap"]] = scores - scores.max()
        out[lo:hi, col["first_rank"]] = _ranks(scores)
        others = [k for k, s in enumerate(voters) if s != surfaces[i]]
        if not others:
            continue
        block = sims[lo:hi][:, others]
        w = weights[others]
        mean = block @ w / max(float(w.sum()), 1e-6)
        out[lo:hi, col["resolved_coherence"]] = mean
        out[lo:hi, col["resolved_coherence_max"]] = block.max(axis=1)
        out[lo:hi, col["resolved_coherence_rank"]] = _ranks(mean)
        out[lo:hi, col["resolved_coherence_gap"]] = mean - mean.max()
        out[lo:hi, col["resolved_coherence_vs_first"]] = mean - mean[0]
    return out
