"""Domain data of entity linking: frozen dataclasses, never tuples or loose dicts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Entity:
    """One knowledge-base entity.

    Attributes:
        entity_id: unique id (in the shared KB, an English Wikipedia title).
        name: display name.
        description: a short text about the entity (first sentences of its article).
        aliases: other names of the entity (e.g. from Wikidata).
        entity_type: a coarse type (``person``, ``place``, ``organization``, ``other``) when known.
        popularity: an optional popularity weight (higher = more linked to).
        short_description: an optional one-line gloss ("capital city of the United States", as
            Wikidata gives), kept with the entity in the built KB. Not embedded: adding it to
            the embedded text was level on the training sets (docs/benchmarks.md).
    """

    entity_id: str
    name: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    entity_type: str | None = None
    popularity: float | None = None
    short_description: str = ""


@dataclass(frozen=True, slots=True)
class AliasEntry:
    """One row of the alias table: ``alias`` may refer to ``entity_id`` with the given rank (1 = best)."""

    alias: str
    entity_id: str
    rank: int


@dataclass(frozen=True, slots=True)
class Mention:
    """A span of a text that may name an entity. Offsets are character offsets, ``end`` exclusive.

    ``label`` is the NER label that found it (``PERSON``, ``ORG``, ...) or ``None`` when the span
    was given by the caller.
    """

    start: int
    end: int
    surface: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A candidate entity for a mention and where it came from.

    Attributes:
        entity_id: the KB entity.
        alias_rank: its rank under the mention's alias in the alias table (1 = best), or ``None``
            when the alias table did not propose it.
        sources: the generators that proposed it (``alias``, ``prior``, ``variant``, ``fuzzy``,
            ``dense``, ``coreference``), in the order they did.
        fuzzy_score: string similarity (0-100) of the fuzzy key that matched, when fuzzy.
        dense_score: cosine of the mention context and the entity text, when dense retrieval
            proposed it.
        score: the disambiguator's score (filled in by disambiguation; 0 before).
    """

    entity_id: str
    alias_rank: int | None = None
    sources: tuple[str, ...] = ()
    fuzzy_score: float | None = None
    dense_score: float | None = None
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class Link:
    """A mention and its entity (``None`` = NIL), with the scored candidates, best first.

    ``score`` is the disambiguator's score of the chosen entity (or of the best candidate when
    the mention was judged NIL); ``coreferent`` is True when the entity was propagated from a
    longer mention of the same document.
    """

    mention: Mention
    entity_id: str | None
    score: float
    candidates: tuple[Candidate, ...] = ()
    coreferent: bool = False

    @property
    def is_nil(self) -> bool:
        """True when the mention links to no KB entity."""
        return self.entity_id is None


@dataclass(frozen=True, slots=True)
class GoldMention:
    """A benchmark mention: a span and its gold entity (``None`` = NIL)."""

    start: int
    end: int
    surface: str
    entity_id: str | None


@dataclass(frozen=True, slots=True)
class LinkingDocument:
    """A benchmark document: text and gold mentions."""

    doc_id: str
    text: str
    mentions: tuple[GoldMention, ...] = field(default=())
