"""Mention contexts: the sentences of a document, each encoded once.

Disambiguation compares a mention's context with candidate descriptions. Encoding a window
around every mention costs one transformer pass per mention and re-reads the same words many
times (news names a dozen entities in a paragraph); encoding each sentence that holds a mention
once, and sharing its vector among that sentence's mentions, costs a pass over the text at most.
The document vector is the mean of those sentence vectors, so it is free.

The splitter is a rule, not a parser: a sentence ends at ``.``, ``!`` or ``?`` (optionally
followed by a closing quote or bracket) before whitespace and an upper-case letter, digit or
quote, or at a line break, except after a known abbreviation ("Mr.", "Gen.") or a single
initial ("U.S.", "George W."). Wrong splits only shorten a context.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from linking.types import Mention

_BOUNDARY = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])|\n\s*")
_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "st", "jr", "sr", "gen", "sen", "rep", "gov", "lt", "col", "capt",
        "sgt", "prof", "rev", "inc", "corp", "co", "ltd", "no", "vs", "mt", "ft", "jan", "feb", "mar",
        "apr", "aug", "sept", "sep", "oct", "nov", "dec", "u.s", "u.n", "u.k", "e.g", "i.e", "p.m", "a.m",
    }
)  # fmt: skip
MAX_SENTENCE_CHARS = 400


@dataclass(frozen=True, slots=True)
class MentionContexts:
    """The texts to encode (one per distinct sentence holding a mention) and each mention's row among them."""

    texts: tuple[str, ...]
    rows: tuple[int, ...]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (whitespace-trimmed, none empty).

    Example:
        >>> t = "Mr. Smith went to Washington. He met Gen. Jones!"
        >>> [t[s:e] for s, e in sentence_spans(t)]
        ['Mr. Smith went to Washington.', 'He met Gen. Jones!']
    """
    spans = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if match.group(0)[0] == ".":
            word = text[max(start, match.start() - 12) : match.start()].split()
            last = word[-1].casefold().lstrip("(\"'") if word else ""
            if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
                continue
        end = match.start() + len(match.group(0).rstrip())
        spans.append((start, end))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


def mention_contexts(text: str, mentions: Sequence[Mention], max_chars: int = MAX_SENTENCE_CHARS) -> MentionContexts:
    """The sentence of each mention, deduplicated: mentions of one sentence share one text to encode.

    A sentence longer than ``max_chars`` is cut to a window of that size around the mention (then
    that mention gets a text of its own).
    """
    spans = sentence_spans(text)
    starts = [s for s, _ in spans]
    texts: list[str] = []
    row_of: dict[tuple[int, int], int] = {}
    rows = []
    for mention in mentions:
        # the last sentence starting at or before the mention
        lo, hi = 0, len(starts)
        while lo < hi:
            mid = (lo + hi) // 2
            if starts[mid] <= mention.start:
                lo = mid + 1
            else:
                hi = mid
        s, e = spans[max(lo - 1, 0)] if spans else (0, len(text))
        e = max(e, mention.end)
        if e - s > max_chars:
            half = max((max_chars - (mention.end - mention.start)) // 2, 0)
            s = max(s, mention.start - half)
            e = min(e, max(mention.end + half, s + max_chars))
        key = (s, e)
        if key not in row_of:
            row_of[key] = len(texts)
            texts.append(text[s:e].replace("\n", " "))
        rows.append(row_of[key])
    return MentionContexts(tuple(texts), tuple(rows))
