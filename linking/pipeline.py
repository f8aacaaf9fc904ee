"""The entity linker: mention detection -> candidates -> features -> scores -> NIL -> coreference.

Example:
    >>> linker = EntityLinker(kb, encoder, model, detector=detector)  # doctest: +SKIP
    >>> for link in linker.link("Michael Jordan starred in Creed."):  # doctest: +SKIP
    ...     print(link.mention.surface, link.entity_id, round(link.score, 2))

The encoder is injected (the server loads one and shares it with search). Each document costs
one encoder call (all its mention contexts in one batch); entity vectors are computed once per
KB and encoder (and cached on disk).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from linking.candidates import CandidateConfig, CandidateGenerator
from linking.context import mention_contexts
from linking.coreference import propagate_entities
from linking.disambiguation import PriorScorer, Scorer
from linking.entity_index import EntityIndex
from linking.features import FeatureExtractor, collective_features
from linking.kb import KnowledgeBase
from linking.mentions import MentionDetector, label_for_span
from linking.normalization import normalize_alias
from linking.types import Candidate, Link, Mention
from retrieval.dense import Encoder
from retrieval.errors import InvalidRequestError

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 100_000


@dataclass(frozen=True)
class LinkerConfig:
    """How the linker builds contexts (the mention's sentence, cut to ``max_context_chars``) and candidates."""

    max_context_chars: int = 400
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    coreference: bool = True


@dataclass(frozen=True)
class LinkOptions:
    """Per-request options.

    Attributes:
        top_candidates: how many scored candidates each link carries (the runner-ups).
        nil_threshold: overrides the model's NIL threshold when set (0 = never NIL).
        nil_margin: overrides the model's NIL margin: a best score under the threshold still links
            when it leads the runner-up by at least this much (1 = the threshold alone decides).
        coreference: run in-document coreference propagation.
        include_nil: return mentions judged NIL too (with ``entity_id=None``).
    """

    top_candidates: int = 5
    nil_threshold: float | None = None
    nil_margin: float | None = None
    coreference: bool = True
    include_nil: bool = True


@dataclass(frozen=True, eq=False)
class PreparedDocument:
    """A document's mentions, their candidates and the feature matrix of all pairs."""

    text: str
    mentions: tuple[Mention, ...]
    candidates: tuple[tuple[Candidate, ...], ...]
    features: np.ndarray

    def groups(self) -> list[tuple[int, int]]:
        """Row ranges of each mention's candidates in ``features``."""
        out, row = [], 0
        for cands in self.candidates:
            out.append((row, row + len(cands)))
            row += len(cands)
        return out


class EntityLinker:
    """Links mentions in text to KB entities.

    Args:
        kb: the knowledge base.
        encoder: the sentence encoder (shared with search).
        scorer: a trained :class:`~linking.disambiguation.Disambiguator`; the prior baseline if None.
        detector: mention detection for texts given without spans (and NER type cues for given spans).
        entity_index: precomputed entity vectors; built (and cached) from ``kb`` and ``encoder`` if None.
        config: context window, candidate limits, coreference default.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        encoder: Encoder,
        scorer: Scorer | None = None,
        *,
        detector: MentionDetector | None = None,
        entity_index: EntityIndex | None = None,
        config: LinkerConfig | None = None,
    ) -> None:
        self.kb = kb
        self.encoder = encoder
        self.scorer: Scorer = scorer if scorer is not None else PriorScorer()
        self.detector = detector
        self.config = config or LinkerConfig()
        self.entity_index = entity_index if entity_index is not None else EntityIndex.build(kb, encoder)
        self.generator = CandidateGenerator(kb, self.entity_index, self.config.candidates)
        self.extractor = FeatureExtractor(kb, self.entity_index)

    # -- stages ---------------------------------------------------------------------------------

    def detect(self, text: str) -> list[Mention]:
        """Mentions found by the detector (an error if the linker has none)."""
        if self.detector is None:
            raise InvalidRequestError("mentions", "this linker has no mention detector; give mention spans")
        return self.detector.detect(text)

    def detect_batch(self, texts: Sequence[str]) -> list[list[Mention]]:
        """Mentions of several texts, detected in one spaCy stream (a third less NER time than one call
        per text on news, the same mentions)."""
        if self.detector is None:
            raise InvalidRequestError("mentions", "this linker has no mention detector; give mention spans")
        return self.detector.detect_batch(texts)

    def label_mentions(self, text: str, mentions: Sequence[Mention]) -> list[Mention]:
        """Given spans with the NER label of the entity overlapping them (type cues), if a detector exists."""
        if self.detector is None or all(m.label is not None for m in mentions):
            return list(mentions)
        spans = self.detector.ner_spans([text])[0]
        return [m if m.label is not None else replace(m, label=label_for_span(spans, m.start, m.end)) for m in mentions]

    def prepare(self, text: str, mentions: Sequence[Mention]) -> PreparedDocument:
        """Candidates and features of every mention: one encoder call, each sentence with a mention encoded once."""
        contexts = mention_contexts(text, mentions, self.config.max_context_chars)
        dimension = self.entity_index.vectors.shape[1]
        sentence_vectors = (
            self.encoder.encode(list(contexts.texts)) if contexts.texts else np.zeros((0, dimension), np.float32)
        )
        vectors = sentence_vectors[list(contexts.rows)] if mentions else np.zeros((0, dimension), np.float32)
        doc_vector = sentence_vectors.mean(axis=0) if len(sentence_vectors) else np.zeros(dimension, np.float32)
        candidates = self.generator.generate_batch([m.surface for m in mentions], vectors)
        features = self.extractor.document_features(text, mentions, candidates, vectors, doc_vector)
        return PreparedDocument(text, tuple(mentions), tuple(tuple(c) for c in candidates), features)

    def score(self, prepared: PreparedDocument) -> np.ndarray:
        """Scores of every (mention, candidate) row; a collective scorer's second pass sees the first's picks."""
        scores = self.scorer.score(prepared.features)
        second = getattr(self.scorer, "second", None)
        if second is None or len(scores) == 0:
            return scores
        entity_ids = [c.entity_id for cands in prepared.candidates for c in cands]
        features = collective_features(
            prepared.features,
            prepared.groups(),
            [normalize_alias(m.surface) for m in prepared.mentions],
            self.entity_index.matrix(entity_ids),
            scores,
        )
        return second.score(features)

    def decide(
        self,
        prepared: PreparedDocument,
        scores: np.ndarray,
        options: LinkOptions | None = None,
        *,
        detected: bool = False,
    ) -> list[Link]:
        """Links from candidate scores: best candidate, NIL when low and not clearly ahead, then coreference.

        ``detected`` says the mentions were detected, not given: the model's NIL rule for detected
        mentions applies (if it has one and the options do not override it).
        """
        options = options or LinkOptions()
        model_threshold, model_margin = self.scorer.nil_rule(detected=detected)
        threshold = options.nil_threshold if options.nil_threshold is not None else model_threshold
        margin = options.nil_margin if options.nil_margin is not None else model_margin
        links = []
        for mention, cands, (lo, hi) in zip(prepared.mentions, prepared.candidates, prepared.groups(), strict=True):
            scored = sorted(
                (replace(c, score=float(s)) for c, s in zip(cands, scores[lo:hi], strict=True)),
                key=lambda c: -c.score,
            )
            if not scored:
                links.append(Link(mention, None, 0.0, ()))
                continue
            best = scored[0]
            # NIL only when the best score is low AND it barely beats the runner-up: a low but
            # clear winner is kept (its absolute score is the least transferable part).
            lead = best.score - scored[1].score if len(scored) > 1 else best.score
            entity = None if best.score < threshold and lead < margin else best.entity_id
            links.append(Link(mention, entity, best.score, tuple(scored)))
        if options.coreference and self.config.coreference:
            links = propagate_entities(links, self.kb)
        return [replace(link, candidates=link.candidates[: max(options.top_candidates, 0)]) for link in links]

    # -- entry points ---------------------------------------------------------------------------

    def link(
        self, text: str, mentions: Sequence[Mention] | None = None, options: LinkOptions | None = None
    ) -> list[Link]:
        """Link ``text``: detect mentions (or use the given spans), score their candidates, decide.

        Raises :class:`InvalidRequestError` for an empty or oversized text or spans outside it.
        """
        options = options or LinkOptions()
        validate_request(text, mentions, options)
        detected = mentions is None
        mentions = self.detect(text) if mentions is None else self.label_mentions(text, mentions)
        return self._link_mentions(text, mentions, options, detected=detected)

    def link_batch(
        self,
        texts: Sequence[str],
        mentions: Sequence[Sequence[Mention] | None] | None = None,
        options: LinkOptions | None = None,
    ) -> list[list[Link]]:
        """Link several texts: the texts without given spans go through the detector as one stream, then
        each document is linked as by :meth:`link` (one encoder batch per document)."""
        options = options or LinkOptions()
        given = list(mentions) if mentions is not None else [None] * len(texts)
        if len(given) != len(texts):
            raise InvalidRequestError("mentions", f"{len(given)} mention lists for {len(texts)} texts")
        for text, spans in zip(texts, given, strict=True):
            validate_request(text, spans, options)
        to_detect = [i for i, spans in enumerate(given) if spans is None]
        found_spans = self.detect_batch([texts[i] for i in to_detect]) if to_detect else []
        detected = dict(zip(to_detect, found_spans, strict=True))
        out = []
        for i, (text, spans) in enumerate(zip(texts, given, strict=True)):
            found = detected[i] if spans is None else self.label_mentions(text, spans)
            out.append(self._link_mentions(text, found, options, detected=spans is None))
        return out

    def _link_mentions(
        self, text: str, mentions: Sequence[Mention], options: LinkOptions, *, detected: bool
    ) -> list[Link]:
        if not mentions:
            return []
        prepared = self.prepare(text, mentions)
        links = self.decide(prepared, self.score(prepared), options, detected=detected)
        if not options.include_nil:
            links = [link for link in links if link.entity_id is not None]
        return links


def validate_request(text: str, mentions: Sequence[Mention] | None, options: LinkOptions) -> None:
    """Raise :class:`InvalidRequestError` naming the bad field."""
    if not text or not text.strip():
        raise InvalidRequestError("text", "must not be empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequestError("text", f"longer than {MAX_TEXT_CHARS} characters")
    if options.top_candidates < 0 or options.top_candidates > 100:
        raise InvalidRequestError("options.top_candidates", "must be between 0 and 100")
    if options.nil_threshold is not None and not 0.0 <= options.nil_threshold <= 1.0:
        raise InvalidRequestError("options.nil_threshold", "must be between 0 and 1")
    if options.nil_margin is not None and not 0.0 <= options.nil_margin <= 1.0:
        raise InvalidRequestError("options.nil_margin", "must be between 0 and 1")
    for i, m in enumerate(mentions or ()):
        if not 0 <= m.start < m.end <= len(text):
            raise InvalidRequestError(f"mentions[{i}]", f"span {m.start}-{m.end} is not inside the text")
