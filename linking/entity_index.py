"""Dense vectors of KB entities (name + description) and nearest-entity search over them.

The vectors feed two things: dense candidate retrieval (mention context -> nearest entities) and
the context/coherence features of disambiguation. They are computed once and cached on disk by
:class:`retrieval.dense.EmbeddingCache` (never in the repository) under a key of everything that
shapes them: the exact texts embedded (so a change of :func:`entity_text` is a new entry), the
weights, the precision, the libraries and the batching (:func:`retrieval.dense.vector_cache_key`).
A disambiguator trained on features of these vectors depends on their last bits, so a cache entry
must hold exactly what this code would compute, or training stops being reproducible.

The search is exact (one matrix product with every entity vector) for small KBs and for
training; a KB of :attr:`EntitySearch.approximate_from` entities or more is searched through an
HNSW graph when linking (see :class:`EntitySearch`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from linking.kb import KnowledgeBase
from retrieval.dense import EmbeddingCache, Encoder, default_cache_dir, embed_documents

logger = logging.getLogger(__name__)


def entity_text(name: str, description: str) -> str:
    """The text embedded for an entity: its name, then its description."""
    return f"{name}. {description}" if description else name


@dataclass(frozen=True)
class EntitySearch:
    """How the entities nearest to a mention's context are found (dense candidate retrieval).

    Exact search reads every entity vector for each document: about 20 ms per news document on
    the 41,419-entity AIDA KB, and it grows with the KB (a 1M-entity KB reads 1.5 GB per
    document). From ``approximate_from`` entities on, an HNSW graph (FAISS ``IndexHNSWFlat``,
    ``hnsw_m`` links per node) is searched instead: 0.3 ms per context vector.

    The graph's settings were chosen on aida_testa's mention contexts (2,494 sentence vectors,
    int8 encoder), by the criterion written before the runs: the cheapest setting whose top 5
    agrees with exact search on at least 99% of the entities. M 32, construction depth 200,
    search depth 128: 99.3% (96% of the contexts get exactly the exact list), 0.29 ms per vector;
    depth 64 gave 97.3%, M 16 with depth 128 97.1%.

    Training always searches exactly (:meth:`EntityIndex.with_search` with :data:`EXACT`): the
    graph is built from floating-point comparisons whose last bits differ between CPUs, and a
    model must come out the same on any machine. ``approximate_from=None`` is exact everywhere.
    """

    approximate_from: int | None = 20_000
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128

    def approximate(self, entities: int) -> bool:
        """True when a KB of ``entities`` entities is searched through the HNSW graph."""
        return self.approximate_from is not None and entities >= self.approximate_from


EXACT = EntitySearch(approximate_from=None)
"""Exact nearest-entity search whatever the KB's size (training, reproducibility checks)."""


class EntityIndex:
    """Entity embeddings in KB order, a row lookup by id, and nearest-entity search.

    The search is one matrix product of the query vectors with every entity vector, or for a large
    KB an HNSW graph built on first use and cached on disk (see :class:`EntitySearch`).

    Example:
        >>> index = EntityIndex.build(kb, encoder)  # doctest: +SKIP
        >>> index.nearest(encoder.encode(["the Bulls guard"]), k=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        entity_ids: list[str],
        vectors: np.ndarray,
        search: EntitySearch | None = None,
        *,
        cache_dir: str | Path | None = None,
    ) -> None:
        if vectors.shape[0] != len(entity_ids):
            raise ValueError(f"{vectors.shape[0]} vectors for {len(entity_ids)} entities")
        self.entity_ids = entity_ids
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.search = search or EntitySearch()
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._row = {eid: i for i, eid in enumerate(entity_ids)}
        self._graph: Any = None
        self._graph_lock = threading.Lock()

    @classmethod
    def build(
        cls,
        kb: KnowledgeBase,
        encoder: Encoder,
        *,
        cache: EmbeddingCache | None = None,
        search: EntitySearch | None = None,
    ) -> EntityIndex:
        """Embed every entity of ``kb`` (read from the cache when the same KB and encoder were seen)."""
        entities = kb.entities()
        texts = [entity_text(e.name, e.description) for e in entities]
        cache = cache if cache is not None else EmbeddingCache()
        vectors = embed_documents(encoder, texts, cache=cache, what="entities")
        logger.info("entity index: %d entities x %d dims", *vectors.shape)
        return cls([e.entity_id for e in entities], vectors, search, cache_dir=cache.directory.parent / "entity-hnsw")

    def with_search(self, search: EntitySearch) -> EntityIndex:
        """The same vectors searched another way (a graph already built is shared if the settings agree)."""
        other = EntityIndex(self.entity_ids, self.vectors, search, cache_dir=self._cache_dir)
        if replace(search, approximate_from=None) == replace(self.search, approximate_from=None):
            other._graph, other._graph_lock = self._graph, self._graph_lock
        return other

    @property
    def approximate(self) -> bool:
        """True when :meth:`nearest` searches the HNSW graph."""
        return self.search.approximate(len(self.entity_ids))

    def prepare_search(self) -> None:
        """Build (or read from the cache) the HNSW graph now if this index searches one, not on the first request."""
        if self.approximate:
            self._hnsw()

    def vector(self, entity_id: str) -> np.ndarray:
        """The entity's unit vector."""
        return self.vectors[self._row[entity_id]]

    def matrix(self, entity_ids: list[str]) -> np.ndarray:
        """Vectors of several entities, one row each."""
        if not entity_ids:
            return np.zeros((0, self.vectors.shape[1]), dtype=np.float32)
        return self.vectors[[self._row[eid] for eid in entity_ids]]

    def nearest(self, query_vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` entities nearest to each query vector (cosine), best first.

        Exact search orders totally: score descending, then KB order, also among entities tied
        with the ``k``-th score. The HNSW graph returns what it finds, best first.
        """
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if query_vectors.ndim == 1:
            query_vectors = query_vectors[None, :]
        total = len(self.entity_ids)
        k = min(k, total)
        if k <= 0 or len(query_vectors) == 0:
            return [[] for _ in range(len(query_vectors))]
        if self.approximate:
            scores, positions = self._hnsw().search(query_vectors, k)
            return [
                [(self.entity_ids[p], float(s)) for s, p in zip(row_scores, row_positions, strict=True) if p >= 0]
                for row_scores, row_positions in zip(scores, positions, strict=True)
            ]
        scores = query_vectors @ self.vectors.T
        results = []
        for row in scores:
            if k < total:
                kth = row[np.argpartition(-row, k - 1)[k - 1]]
                positions = np.flatnonzero(row >= kth)
            else:
                positions = np.arange(total)
            order = np.lexsort((positions, -row[positions]))[:k]
            results.append([(self.entity_ids[positions[i]], float(row[positions[i]])) for i in order])
        return results

    def _hnsw(self) -> Any:
        """The HNSW graph over the vectors: built once per process (or read from the disk cache)."""
        if self._graph is not None:
            return self._graph
        with self._graph_lock:
            if self._graph is None:
                self._graph = _load_or_build_graph(self.vectors, self.search, self._cache_dir)
                self._graph.hnsw.efSearch = self.search.ef_search
        return self._graph


def _load_or_build_graph(vectors: np.ndarray, search: EntitySearch, cache_dir: Path | None) -> Any:
    """The HNSW graph of ``vectors``: from ``cache_dir`` under a key of the vectors, the settings and
    FAISS's version, else built on one thread (the same graph each time) and written there."""
    digest = hashlib.sha256(vectors.tobytes()).hexdigest()[:32]
    name = f"{digest}-m{search.hnsw_m}-efc{search.ef_construction}-faiss{faiss.__version__}.faiss"
    directory = cache_dir if cache_dir is not None else default_cache_dir() / "entity-hnsw"
    path = directory / name
    if path.is_file():
        try:
            graph = faiss.read_index(str(path))
            if graph.ntotal == len(vectors) and graph.d == vectors.shape[1]:
                return graph
            logger.warning("ignoring entity graph cache %s: it holds %d vectors", path, graph.ntotal)
        except RuntimeError as exc:
            logger.warning("ignoring unreadable entity graph cache %s: %s", path, exc)
    logger.info("building the HNSW graph of %d entity vectors (cached in %s)", len(vectors), directory)
    graph = faiss.IndexHNSWFlat(vectors.shape[1], search.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = search.ef_construction
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one thread inserts in a fixed order: the same graph from the same vectors
    try:
        graph.add(vectors)
    finally:
        faiss.omp_set_num_threads(threads)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f"{name}.{os.getpid()}.tmp"
        faiss.write_index(graph, str(tmp))
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # a cache that cannot be written is not an error
        logger.warning("could not write entity graph cache %s: %s", path, exc)
    return graph
