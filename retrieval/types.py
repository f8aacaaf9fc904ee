"""Domain data of the search core: frozen dataclasses, never tuples or loose dicts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Document:
    """One corpus document (BEIR layout: ``_id``, ``title``, ``text``)."""

    doc_id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """Title and text as one string, the unit both indexes see."""
        return f"{self.title}\n{self.text}" if self.title else self.text

    @property
    def is_empty(self) -> bool:
        """True when neither title nor text holds anything but whitespace: nothing to match a query."""
        return not (self.title.strip() or self.text.strip())


@dataclass(frozen=True, slots=True)
class Query:
    qid: str
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved document from a single retriever: its id and score."""

    doc_id: str
    score: float


@dataclass(frozen=True, slots=True)
class ScoredHit:
    """A hit from the full pipeline, with the score of every stage that saw it.

    ``score`` is the final score that orders the list (the last stage that ran). A stage
    score is ``None`` when that stage did not retrieve or rescore the document.
    """

    doc_id: str
    score: float
    rank: int
    bm25: float | None = None
    dense: float | None = None
    fused: float | None = None
    rerank: float | None = None
