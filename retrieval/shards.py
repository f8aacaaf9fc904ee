"""Index shards and the scatter-gather views that make N shards answer like one index.

A shard holds a contiguous range of a corpus's documents (its BM25 index, scored with the corpus's
statistics, and its FAISS index). :class:`IndexShard` is the whole interface a searcher needs from
a shard, small and made of plain values (token lists, vectors, ``Hit`` lists, arrays), so that a
remote actor can implement it as well as :class:`LocalShard` does in-process.

:class:`ShardedBM25` and :class:`ShardedDense` have the verbs of :class:`~retrieval.bm25.BM25Index`
and :class:`~retrieval.dense.DenseIndex` that the pipeline and the reranker use: ``search`` asks
every shard for its top ``k`` and merges the lists by (score descending, global position). The
global top ``k`` is within the union of the shards' top ``k`` lists under that same total order,
and each shard's list is cut in that order (see ``BM25Index.search_tokens`` and
``DenseIndex.search``), so the merged list is exactly the unsharded one.

Example:
    >>> shard = LocalShard.load("index/shard-000", FaissConfig())  # doctest: +SKIP
    >>> shard.bm25_top(["aspirin", "heart"], 10)  # doctest: +SKIP
    [Hit(doc_id='4983', score=7.1), ...]
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from artifacts import Manifest, checksum_files
from retrieval.bm25 import BM25Config, BM25Index
from retrieval.corpus import load_corpus
from retrieval.dense import DenseIndex, FaissConfig
from retrieval.tokenization import Tokenizer
from retrieval.types import Document, Hit

logger = logging.getLogger(__name__)

SHARD_KIND = "search-index-shard"
SHARD_FORMAT_VERSION = 1
SHARD_DOCS_FILE = "docs.jsonl"

T = TypeVar("T")


@runtime_checkable
class IndexShard(Protocol):
    """What a searcher asks of one shard. Positions are the shard's own (0 .. ``doc_count`` - 1)."""

    name: str
    doc_count: int
    documents: list[Document]

    def bm25_top(self, query_tokens: Sequence[str], k: int) -> list[Hit]:
        """Top ``k`` documents of the shard for an analyzed query, by (score desc, position)."""
        ...

    def dense_top(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top ``k`` documents of the shard for each query vector, by (score desc, position)."""
        ...

    def bm25_contributions(self, term_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """BM25 contribution of each term (rows, corpus term ids) to each shard position (columns)."""
        ...

    def document_frequencies(self, term_ids: np.ndarray) -> np.ndarray:
        """How many of the shard's documents contain each term."""
        ...

    def dense_vectors(self, positions: np.ndarray) -> np.ndarray:
        """The stored document vectors at shard positions, one row each."""
        ...


class LocalShard:
    """A shard directory opened in this process: documents, BM25 index and FAISS index.

    Layout::

        manifest.json   kind "search-index-shard": the shard's number, range and file checksums
        docs.jsonl      the shard's documents, in corpus order
        bm25/           bm25s files, scored with the corpus-wide statistics (retrieval/bm25_stats.py)
        dense.faiss     the shard's document vectors
    """

    def __init__(self, name: str, documents: list[Document], bm25: BM25Index, dense: DenseIndex) -> None:
        if not (len(documents) == bm25.num_docs == len(dense.doc_ids)):
            raise ValueError(
                f"shard {name}: {len(documents)} documents, {bm25.num_docs} in BM25, {len(dense.doc_ids)} in FAISS"
            )
        self.name = name
        self.documents = documents
        self.bm25 = bm25
        self.dense = dense
        self.doc_count = len(documents)

    @classmethod
    def load(cls, directory: str | Path, faiss_config: FaissConfig, *, name: str | None = None) -> LocalShard:
        """Open a shard directory (its checksums are the parent index's to verify)."""
        directory = Path(directory)
        documents = load_corpus(directory / SHARD_DOCS_FILE)
        doc_ids = [doc.doc_id for doc in documents]
        bm25 = BM25Index.load(directory, doc_ids)
        dense = DenseIndex.load(directory, doc_ids, faiss_config)
        return cls(name or directory.name, documents, bm25, dense)

    def save(self, directory: Path, manifest: Manifest) -> None:
        """Write the shard's files into ``directory``, then ``manifest`` with their checksums filled in."""
        directory.mkdir(parents=True, exist_ok=True)
        write_documents(directory / SHARD_DOCS_FILE, self.documents)
        self.bm25.save(directory)
        self.dense.save(directory)
        manifest.with_updates(files=checksum_files(directory)).write(directory)

    def bm25_top(self, query_tokens: Sequence[str], k: int) -> list[Hit]:
        return self.bm25.search_tokens(query_tokens, k)

    def dense_top(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        return self.dense.search(query_vectors, k)

    def bm25_contributions(self, term_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return self.bm25.term_contributions(term_ids, positions)

    def document_frequencies(self, term_ids: np.ndarray) -> np.ndarray:
        return self.bm25.document_frequencies(term_ids)

    def dense_vectors(self, positions: np.ndarray) -> np.ndarray:
        return self.dense.vectors(positions)


_MISSING: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("sleuth_missing_shards", default=None)


@contextmanager
def collect_missing() -> Iterator[set[str]]:
    """The names of the shards that did not answer a call made inside this block (see :func:`record_missing`).

    A remote shard that cannot answer (every replica gone, no answer before its timeout) records
    itself and answers empty, so the search is exactly the search over the shards that answered and
    the caller can say which did not; a result is never silently partial.
    """
    missing: set[str] = set()
    token = _MISSING.set(missing)
    try:
        yield missing
    finally:
        _MISSING.reset(token)


def record_missing(shard: str) -> None:
    """Note that ``shard`` did not answer, for the innermost :func:`collect_missing` block (if any)."""
    missing = _MISSING.get()
    if missing is not None:
        missing.add(shard)


def write_documents(path: Path, documents: Sequence[Document]) -> None:
    """Documents as BEIR JSON lines (``_id``, ``title``, ``text``), the docstore of an index."""
    with open(path, "w", encoding="utf-8") as handle:
        for doc in documents:
            handle.write(
                json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}, ensure_ascii=False) + "\n"
            )


def merge_hits(lists: Sequence[Sequence[Hit]], k: int, position: Mapping[str, int]) -> list[Hit]:
    """The best ``k`` of several shards' lists, by score descending, then global position."""
    merged = [hit for hits in lists for hit in hits]
    merged.sort(key=lambda hit: (-hit.score, position[hit.doc_id]))
    return merged[:k]


def sequential(function: Callable[[IndexShard], T], shards: Sequence[IndexShard]) -> list[T]:
    """Call ``function`` on every shard in turn: the scatter of in-process shards.

    Shards that answer from elsewhere (blocking calls to remote actors) want :func:`concurrent`,
    which has every shard working at once.
    """
    return [function(shard) for shard in shards]


def concurrent(executor: Executor) -> Scatter:
    """A scatter that runs the shards' calls on ``executor`` at once and returns them in shard order."""

    def scatter(function: Callable[[IndexShard], T], shards: Sequence[IndexShard]) -> list[T]:
        # Each call runs in a copy of the caller's context, so a shard's record_missing reaches the
        # caller's collect_missing block from the executor's thread.
        contexts = [contextvars.copy_context() for _ in shards]
        return list(executor.map(lambda pair: pair[0].run(function, pair[1]), zip(contexts, shards, strict=True)))

    return scatter


Scatter = Callable[[Callable[[IndexShard], Any], Sequence[IndexShard]], list[Any]]

ShardOpener = Callable[[Path, str, list[Document]], IndexShard]
"""``(shard directory, shard name, its documents) -> the shard that answers for it`` (a remote one)."""


class _ShardRanges:
    """Global positions <-> (shard, shard position), for shards of consecutive documents."""

    def __init__(self, shards: Sequence[IndexShard]) -> None:
        counts = [shard.doc_count for shard in shards]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def split(self, positions: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """For each shard holding some of ``positions``: (shard number, columns, shard positions)."""
        positions = np.asarray(positions, dtype=np.int64)
        owner = np.searchsorted(self.offsets, positions, side="right") - 1
        parts = []
        for shard in np.unique(owner):
            columns = np.flatnonzero(owner == shard)
            parts.append((int(shard), columns, positions[columns] - self.offsets[shard]))
        return parts


class ShardedBM25:
    """BM25 over shards, with the verbs of :class:`BM25Index` that searching and reranking use.

    The query is analyzed once here; shards receive its tokens.
    """

    def __init__(
        self,
        shards: Sequence[IndexShard],
        doc_ids: list[str],
        tokenizer: Tokenizer,
        config: BM25Config,
        vocabulary: Mapping[str, int],
        position: Mapping[str, int],
        scatter: Scatter = sequential,
    ) -> None:
        self.shards = list(shards)
        self.doc_ids = doc_ids
        self.tokenizer = tokenizer
        self.config = config
        self._vocab = vocabulary
        self._position = position
        self._ranges = _ShardRanges(self.shards)
        self._scatter = scatter
        self._df: np.ndarray | None = None

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def vocabulary_size(self) -> int:
        return len(self._vocab)

    def query_term_ids(self, query: str) -> np.ndarray:
        """Corpus vocabulary ids of the query's terms (repeats kept, unknown terms dropped)."""
        vocab = self._vocab
        return np.fromiter((vocab[t] for t in self.tokenizer.tokenize(query) if t in vocab), dtype=np.int32)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The top ``k`` documents of all shards, exactly as one index of the whole corpus ranks them."""
        tokens = self.tokenizer.tokenize(query)
        lists = self._scatter(lambda shard: shard.bm25_top(tokens, k), self.shards)
        return merge_hits(lists, k, self._position)

    def batch_search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return [self.search(query, k) for query in queries]

    def document_frequencies(self, term_ids: np.ndarray) -> np.ndarray:
        """Corpus document frequencies: the sum of the shards' (computed once, then kept)."""
        if self._df is None:
            every = np.arange(len(self._vocab), dtype=np.int64)
            self._df = np.sum(self._scatter(lambda shard: shard.document_frequencies(every), self.shards), axis=0)
        return self._df[np.asarray(term_ids, dtype=np.int64)]

    def term_contributions(self, term_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """As :meth:`BM25Index.term_contributions`, with global positions."""
        out = np.zeros((len(term_ids), len(positions)), dtype=np.float32)
        for shard, columns, local in self._ranges.split(positions):
            out[:, columns] = self.shards[shard].bm25_contributions(term_ids, local)
        return out


class ShardedDense:
    """Dense retrieval over shards, with the verbs of :class:`DenseIndex` that searching and reranking use."""

    def __init__(
        self,
        shards: Sequence[IndexShard],
        doc_ids: list[str],
        config: FaissConfig,
        dimension: int,
        position: Mapping[str, int],
        scatter: Scatter = sequential,
    ) -> None:
        self.shards = list(shards)
        self.doc_ids = doc_ids
        self.config = config
        self.dimension = dimension
        self._position = position
        self._ranges = _ShardRanges(self.shards)
        self._scatter = scatter

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-``k`` documents of all shards for each query vector, merged by (score, global position)."""
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if query_vectors.ndim == 1:
            query_vectors = query_vectors[None, :]
        per_shard = self._scatter(lambda shard: shard.dense_top(query_vectors, k), self.shards)
        return [merge_hits([lists[row] for lists in per_shard], k, self._position) for row in range(len(query_vectors))]

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        """The stored embeddings of the documents at global ``positions``, one row each."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.zeros((positions.size, self.dimension), dtype=np.float32)
        for shard, rows, local in self._ranges.split(positions):
            out[rows] = self.shards[shard].dense_vectors(local)
        return out
