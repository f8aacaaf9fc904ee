"""Offline scoring of entity linking, as ../shared/data/README.md defines it.

Both protocols are micro-averaged over mentions and add up as counts (like spaCy's ``PRFScore``):

* ED (gold mentions given): precision = correct / predicted non-NIL, recall = correct / gold
  mentions with an entity, F1 = 2PR / (P + R). An entity predicted for a gold-NIL mention is a
  predicted non-NIL that is not correct: a false positive (this is how the README's rank-1
  reference F1, e.g. aquaint 0.847, comes out).
* End to end (mentions detected too): a prediction is correct when its span equals a gold span
  and its entity is right (strong match). Gold mentions whose entity is NIL are ignored (a
  prediction on that span counts neither way); a predicted span matching no gold span counts
  against precision.

Candidate recall@k is the share of gold mentions with an entity whose entity is among the first
``k`` candidates. The rank-1 reference scores the same mentions as if each took its first generated
candidate (the alias table's rank 1: an anchor prior, or popularity for popularity-ranked tables),
NIL when it has none: what the model should beat.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from artifacts.textfile import text_lines
from linking.errors import BenchmarkFormatError
from linking.types import Candidate, GoldMention, Link, LinkingDocument, Mention

if TYPE_CHECKING:
    from linking.pipeline import EntityLinker, LinkOptions


def read_benchmark(path: str | Path) -> list[LinkingDocument]:
    """Read a benchmark file.

    JSON lines: ``id``, ``text``, ``mentions`` with ``start``, ``end``, ``surface``, ``entity``
    (an entity id, or null for NIL). Raises :class:`BenchmarkFormatError` naming file and line for
    an unreadable file, a line that is not UTF-8 or not JSON, and a missing or ill-typed field.
    """
    path = Path(path)
    documents = []
    for line_no, line in text_lines(path, BenchmarkFormatError):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchmarkFormatError(path, line_no, f"not valid JSON: {exc.msg} (column {exc.colno})") from exc
        try:
            documents.append(_benchmark_document(row, line_no))
        except ValueError as exc:
            raise BenchmarkFormatError(path, line_no, str(exc)) from exc
    return documents


def _benchmark_document(row: Any, line_no: int) -> LinkingDocument:
    """One benchmark line as a document; ``ValueError`` naming the bad field."""
    if not isinstance(row, dict):
        raise ValueError("expected a JSON object with 'id', 'text' and 'mentions'")
    text = row.get("text")
    if not isinstance(text, str):
        raise ValueError("field 'text' must be a string" + (", but it is missing" if "text" not in row else ""))
    doc_id = row.get("id", line_no)
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        raise ValueError("field 'id' must be a string or a number")
    raw_mentions = row.get("mentions", [])
    if not isinstance(raw_mentions, list):
        raise ValueError("field 'mentions' must be a list")
    mentions = []
    for i, m in enumerate(raw_mentions):
        where = f"mentions[{i}]"
        if not isinstance(m, dict):
            raise ValueError(f"{where} must be an object with 'start', 'end' and 'entity'")
        for key in ("start", "end"):
            value = m.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                problem = "it is missing" if key not in m else f"it is {json.dumps(value)}"
                raise ValueError(f"{where}.{key} must be an integer character offset, but {problem}")
        start, end = m["start"], m["end"]
        if not 0 <= start < end <= len(text):
            raise ValueError(f"{where}: span {start}-{end} is not inside the text ({len(text)} characters)")
        surface = m.get("surface", text[start:end])
        if not isinstance(surface, str):
            raise ValueError(f"{where}.surface must be a string")
        entity = m.get("entity")
        if entity is not None and not isinstance(entity, str):
            raise ValueError(f"{where}.entity must be an entity id (a string) or null for NIL")
        mentions.append(GoldMention(start, end, surface, entity or None))
    return LinkingDocument(str(doc_id), text, tuple(mentions))


@dataclass
class PRFCounts:
    """True positives, false positives and false negatives; sums of these give micro scores."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: PRFCounts) -> PRFCounts:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True)
class MentionError:
    """One wrongly linked (or missed, or spurious) mention, for error analysis."""

    doc_id: str
    start: int
    end: int
    surface: str
    gold: str | None
    predicted: str | None
    candidates: tuple[tuple[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "doc": self.doc_id,
            "start": self.start,
            "end": self.end,
            "surface": self.surface,
            "gold": self.gold,
            "predicted": self.predicted,
            "candidates": [{"entity": e, "score": round(s, 4)} for e, s in self.candidates],
        }


@dataclass
class EvaluationResult:
    """Scores of one benchmark run: counts, candidate recall at several k, and the errors."""

    mode: str
    counts: PRFCounts = field(default_factory=PRFCounts)
    candidate_hits: dict[int, int] = field(default_factory=dict)
    gold_linkable: int = 0
    mentions: int = 0
    errors: list[MentionError] = field(default_factory=list)
    per_document: dict[str, PRFCounts] = field(default_factory=dict)
    rank1: PRFCounts = field(default_factory=PRFCounts)

    def candidate_recall(self) -> dict[int, float]:
        return {
            k: (hits / self.gold_linkable if self.gold_linkable else 0.0) for k, hits in self.candidate_hits.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` output: ``precision``, ``recall``, ``f1``, ``candidate_recall``, ``mentions``."""
        return {
            "mode": self.mode,
            "precision": self.counts.precision,
            "recall": self.counts.recall,
            "f1": self.counts.f1,
            "tp": self.counts.tp,
            "fp": self.counts.fp,
            "fn": self.counts.fn,
            "candidate_recall": {str(k): v for k, v in sorted(self.candidate_recall().items())},
            "rank1": {"precision": self.rank1.precision, "recall": self.rank1.recall, "f1": self.rank1.f1},
            "mentions": self.mentions,
        }


RECALL_KS = (1, 10, 30)


def _candidates_summary(candidates: Sequence[Candidate], n: int = 5) -> tuple[tuple[str, float], ...]:
    return tuple((c.entity_id, c.score) for c in candidates[:n])


def score_document(
    document: LinkingDocument,
    links: Sequence[Link],
    mode: str,
    result: EvaluationResult,
    *,
    ks: Iterable[int] = RECALL_KS,
    generated: Sequence[Sequence[str]] | None = None,
) -> None:
    """Add one document's counts (and errors, candidate recall) to ``result``.

    In ED mode ``links`` must be one per gold mention, same spans; in e2e mode any spans.
    ``generated`` (one list per link) gives the candidates in generation order for recall@k;
    without it, the links' scored candidates are used.
    """
    gold_by_span = {(g.start, g.end): g for g in document.mentions}
    ks = tuple(ks)
    for k in ks:
        result.candidate_hits.setdefault(k, 0)
    counts = PRFCounts()
    matched_gold: set[tuple[int, int]] = set()
    for position, link in enumerate(links):
        span = (link.mention.start, link.mention.end)
        gold = gold_by_span.get(span)
        result.mentions += 1
        if gold is not None and gold.entity_id is not None:
            ranked = list(generated[position]) if generated is not None else [c.entity_id for c in link.candidates]
            result.gold_linkable += 1
            matched_gold.add(span)
            for k in ks:
                if gold.entity_id in ranked[:k]:
                    result.candidate_hits[k] += 1
        if gold is not None and gold.entity_id is None and (mode == "e2e" or link.entity_id is None):
            continue  # e2e ignores NIL gold spans; in ED, NIL on a NIL gold is simply not counted
        if link.entity_id is None:
            if gold is not None:
                counts.fn += 1
                result.errors.append(_error(document, link, gold.entity_id))
            continue
        if gold is not None and link.entity_id == gold.entity_id:
            counts.tp += 1
        else:
            counts.fp += 1
            if gold is not None and gold.entity_id is not None:
                counts.fn += 1
            result.errors.append(_error(document, link, gold.entity_id if gold is not None else None))
    for gold in document.mentions:
        if gold.entity_id is not None and (gold.start, gold.end) not in matched_gold:
            counts.fn += 1
            result.gold_linkable += 1
            if mode == "e2e":
                result.errors.append(
                    MentionError(document.doc_id, gold.start, gold.end, gold.surface, gold.entity_id, None, ())
                )
    result.counts += counts


def _error(document: LinkingDocument, link: Link, gold: str | None) -> MentionError:
    m = link.mention
    return MentionError(
        document.doc_id, m.start, m.end, m.surface, gold, link.entity_id, _candidates_summary(link.candidates)
    )


def evaluate_linker(
    linker: EntityLinker,
    documents: Sequence[LinkingDocument],
    mode: str,
    options: LinkOptions | None = None,
) -> EvaluationResult:
    """Run ``linker`` on ``documents`` and score it.

    ``mode="ed"`` links the gold spans (with NER labels as type cues); ``mode="e2e"`` detects
    mentions first. Candidate recall@k is over the generated candidates, in generation order.
    """
    from linking.pipeline import LinkOptions

    if mode not in ("ed", "e2e"):
        raise ValueError(f"mode must be 'ed' or 'e2e', not {mode!r}")
    options = options or LinkOptions(top_candidates=30)
    result = EvaluationResult(mode)
    # End to end, spaCy reads the documents as one stream (the same mentions, less NER time).
    detected = linker.detect_batch([d.text for d in documents]) if mode == "e2e" else [None] * len(documents)
    for document, found in zip(documents, detected, strict=True):
        before = PRFCounts(result.counts.tp, result.counts.fp, result.counts.fn)
        _score_one(linker, document, mode, options, result, found)
        result.per_document[document.doc_id] = PRFCounts(
            result.counts.tp - before.tp, result.counts.fp - before.fp, result.counts.fn - before.fn
        )
    return result


def _score_one(
    linker: EntityLinker,
    document: LinkingDocument,
    mode: str,
    options: LinkOptions,
    result: EvaluationResult,
    detected: list[Mention] | None = None,
) -> None:
    if mode == "ed":
        given = [Mention(g.start, g.end, document.text[g.start : g.end]) for g in document.mentions]
        mentions = linker.label_mentions(document.text, given)
    else:
        mentions = detected if detected is not None else linker.detect(document.text)
    if not mentions:
        score_document(document, [], mode, result)
        return
    prepared = linker.prepare(document.text, mentions)
    links = linker.decide(prepared, linker.score(prepared), options, detected=mode == "e2e")
    generated = [[c.entity_id for c in cands] for cands in prepared.candidates]
    score_document(document, links, mode, result, generated=generated)
    result.rank1 += rank1_counts(document, links, generated, mode)


def rank1_counts(
    document: LinkingDocument, links: Sequence[Link], generated: Sequence[Sequence[str]], mode: str
) -> PRFCounts:
    """The counts of the rank-1 reference: each mention of ``links`` takes its first generated candidate."""
    reference = [
        Link(link.mention, ranked[0] if ranked else None, 0.0) for link, ranked in zip(links, generated, strict=True)
    ]
    scratch = EvaluationResult(mode)
    score_document(document, reference, mode, scratch, ks=())
    return scratch.counts
