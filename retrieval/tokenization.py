"""Lexical analysis for BM25: lower-casing, a word pattern, stopwords, Snowball stemming.

The analyzer follows bm25s's defaults (``(?u)\\b\\w\\w+\\b``, its English stopword list, the same
as Lucene's ``EnglishAnalyzer``) with PyStemmer's Snowball stemmer. Its settings are part of an
index: they are written to the manifest and restored on load, because a query analysed
differently from the documents silently loses recall.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import bm25s.stopwords as bm25s_stopwords
import Stemmer

_STOPWORD_LISTS = {
    "english": bm25s_stopwords.STOPWORDS_EN,
    "english_plus": bm25s_stopwords.STOPWORDS_EN_PLUS,
    "none": (),
}


@dataclass(frozen=True)
class TokenizerConfig:
    """Settings of the analyzer (recorded in an index's manifest)."""

    lower: bool = True
    pattern: str = r"(?u)\b\w\w+\b"
    stopwords: str = "english"
    stemmer: str | None = "english"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        return cls(**data)


class Tokenizer:
    """Turns text into BM25 terms.

    Example:
        >>> Tokenizer().tokenize("The runners are running")
        ['runner', 'run']
    """

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        self.config = config or TokenizerConfig()
        if self.config.stopwords not in _STOPWORD_LISTS:
            raise ValueError(f"unknown stopword list {self.config.stopwords!r}; choose from {sorted(_STOPWORD_LISTS)}")
        self._pattern = re.compile(self.config.pattern)
        self._stopwords = frozenset(_STOPWORD_LISTS[self.config.stopwords])
        self._stemmer = Stemmer.Stemmer(self.config.stemmer) if self.config.stemmer else None
        # Stemming dominates query analysis; a word's stem never changes, so remember it.
        self._stem_cache: dict[str, str] = {}

    def tokenize(self, text: str) -> list[str]:
        if self.config.lower:
            text = text.lower()
        words = [w for w in self._pattern.findall(text) if w not in self._stopwords]
        if self._stemmer is None:
            return words
        cache = self._stem_cache
        unknown = [w for w in words if w not in cache]
        if unknown:
            if len(cache) > 1_000_000:
                cache.clear()
            cache.update(zip(unknown, self._stemmer.stemWords(unknown), strict=True))
        return [cache[w] for w in words]

    def tokenize_many(self, texts: list[str]) -> list[list[str]]:
        return [self.tokenize(text) for text in texts]
