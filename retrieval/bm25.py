"""BM25 retrieval on bm25s (sparse precomputed scores) with our analyzer.

bm25s precomputes every (term, document) BM25 contribution at index time, so a query is a sum of
a few sparse rows. The score is Lucene's BM25 by default (``method="lucene"``; Kamphuis et al.,
"Which BM25 Do You Mean?", ECIR 2020):

    score(q, d) = sum_{t in q} idf(t) * tf(t,d) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

Lucene's idf is never negative. The tf part omits the classic ``(k1 + 1)`` numerator factor, a
constant that changes no ranking. ``method="robertson"`` uses the classic
``idf = ln((N - df + 0.5) / (df + 0.5))``, which rank_bm25's ``BM25Okapi`` also uses: the two then
give the same ranking and scores equal up to that ``(k1 + 1)`` factor, except for terms in more than
half the documents, whose classic idf is negative. There bm25s clips the idf to 0 and
``BM25Okapi`` replaces it by ``epsilon * mean idf`` (its "IDF floor", epsilon = 0.25).

Defaults ``k1=0.9, b=0.4`` are Anserini's, the usual starting point on BEIR.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np

from retrieval.tokenization import Tokenizer, TokenizerConfig
from retrieval.types import Hit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BM25Config:
    """BM25 parameters (recorded in the manifest)."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BM25Config:
        return cls(**data)


class BM25Index:
    """A BM25 index over a list of documents (identified by position and by ``doc_ids``).

    Example:
        >>> idx = BM25Index.build(["cats purr", "dogs bark"], ["a", "b"])
        >>> [h.doc_id for h in idx.search("dog", k=5)]
        ['b']
    """

    SUBDIR = "bm25"
    CONFIG_FILE = "sleuth_bm25.json"

    def __init__(self, model: bm25s.BM25, doc_ids: list[str], tokenizer: Tokenizer, config: BM25Config) -> None:
        self._model = model
        self.doc_ids = doc_ids
        self.tokenizer = tokenizer
        self.config = config
        self._vocab: dict[str, int] = model.vocab_dict

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocab)

    @property
    def vocabulary(self) -> Mapping[str, int]:
        """Term -> vocabulary id (bm25s's empty token included)."""
        return self._vocab

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        doc_ids: Sequence[str],
        config: BM25Config | None = None,
        tokenizer: Tokenizer | None = None,
        *,
        show_progress: bool = False,
    ) -> BM25Index:
        config = config or BM25Config()
        tokenizer = tokenizer or Tokenizer()
        if len(texts) != len(doc_ids):
            raise ValueError("texts and doc_ids differ in length")
        corpus_tokens = tokenizer.tokenize_many(list(texts))
        # bm25s numbers the vocabulary in set order, which changes with PYTHONHASHSEED; give it
        # a sorted vocabulary so the same corpus always yields byte-identical index files.
        vocab = {term: i for i, term in enumerate(sorted({t for tokens in corpus_tokens for t in tokens}))}
        corpus_ids = [[vocab[t] for t in tokens] for tokens in corpus_tokens]
        model = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
        model.index((corpus_ids, vocab), show_progress=show_progress)
        return cls(model, list(doc_ids), tokenizer, config)

    def query_term_ids(self, query: str) -> np.ndarray:
        """Vocabulary ids of the query's terms (repeats kept, unknown terms dropped)."""
        return self.term_ids(self.tokenizer.tokenize(query))

    def term_ids(self, tokens: Sequence[str]) -> np.ndarray:
        """Vocabulary ids of already analyzed tokens (repeats kept, unknown terms dropped)."""
        vocab = self._vocab
        return np.fromiter((vocab[t] for t in tokens if t in vocab), dtype=np.int32)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for ``query`` (zeros where no term matches)."""
        return self._scores_of_ids(self.query_term_ids(query))

    def _scores_of_ids(self, ids: np.ndarray) -> np.ndarray:
        if ids.size == 0:
            return np.zeros(len(self.doc_ids), dtype=np.float32)
        return self._model.get_scores_from_ids(ids)

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    def document_frequencies(self, term_ids: np.ndarray) -> np.ndarray:
        """How many documents contain each term (by vocabulary id)."""
        indptr = self._model.scores["indptr"]
        term_ids = np.asarray(term_ids, dtype=np.int64)
        return (indptr[term_ids + 1] - indptr[term_ids]).astype(np.int64)

    def term_contributions(self, term_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """BM25 contribution of each term (rows) to each document position (columns); 0 where absent.

        The precomputed matrix is column-compressed by term with sorted document positions, so each
        row is one ``searchsorted`` over that term's postings, without re-tokenizing documents.
        """
        data = self._model.scores["data"]
        indices = self._model.scores["indices"]
        indptr = self._model.scores["indptr"]
        positions = np.asarray(positions, dtype=np.int64)
        out = np.zeros((len(term_ids), len(positions)), dtype=np.float32)
        for row, term in enumerate(np.asarray(term_ids, dtype=np.int64)):
            start, end = int(indptr[term]), int(indptr[term + 1])
            postings = indices[start:end]
            if postings.size == 0:
                continue
            where = np.minimum(np.searchsorted(postings, positions), postings.size - 1)
            found = postings[where] == positions
            out[row, found] = data[start + where[found]]
        return out

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The top ``k`` documents that match at least one query term, best first."""
        return self.search_tokens(self.tokenizer.tokenize(query), k)

    def search_tokens(self, tokens: Sequence[str], k: int = 10) -> list[Hit]:
        """As :meth:`search`, for a query already analyzed into ``tokens``.

        The order is total: score descending, then index position. Documents tied with the k-th
        score are cut by position too, so an index split into shards of consecutive documents
        returns exactly the same list once the shards' lists are merged by (score, position).
        """
        scores = self._scores_of_ids(self.term_ids(tokens))
        matching = np.flatnonzero(scores > 0)
        if matching.size == 0:
            return []
        if matching.size > k:
            matched = scores[matching]
            kth = np.partition(matched, matching.size - k)[matching.size - k]
            better = matching[matched > kth]
            tied = matching[matched == kth]  # ascending positions: keep the first
            matching = np.concatenate([better, tied[: k - better.size]])
        # Sort by score descending; ties by position, so results are deterministic.
        order = np.lexsort((matching, -scores[matching]))
        doc_ids = self.doc_ids
        return [Hit(doc_ids[i], float(scores[i])) for i in matching[order]]

    def batch_search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return [self.search(query, k) for query in queries]

    def save(self, directory: str | Path) -> None:
        target = Path(directory) / self.SUBDIR
        target.mkdir(parents=True, exist_ok=True)
        self._model.save(str(target), show_progress=False)
        payload = {"bm25": self.config.to_dict(), "tokenizer": self.tokenizer.config.to_dict()}
        (target / self.CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, directory: str | Path, doc_ids: list[str], *, mmap: bool = False) -> BM25Index:
        source = Path(directory) / cls.SUBDIR
        payload = json.loads((source / cls.CONFIG_FILE).read_text())
        model = bm25s.BM25.load(str(source), mmap=mmap, show_progress=False, verbosity=0)
        num_docs = int(model.scores["num_docs"])
        if num_docs != len(doc_ids):
            raise ValueError(f"BM25 index holds {num_docs} documents, the docstore {len(doc_ids)}")
        tokenizer = Tokenizer(TokenizerConfig.from_dict(payload["tokenizer"]))
        return cls(model, doc_ids, tokenizer, BM25Config.from_dict(payload["bm25"]))
