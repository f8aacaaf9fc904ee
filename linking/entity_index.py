"""Dense vectors of KB entities (name + description) and exact nearest-entity search over them.

The vectors feed two things: dense candidate retrieval (mention context -> nearest entities) and
the context/coherence features of disambiguation. They are computed once and cached on disk by
:class:`retrieval.dense.EmbeddingCache` (never in the repository) under a key of everything that
shapes them: the exact texts embedded (so a change of :func:`entity_text` is a new entry), the
weights, the precision, the libraries and the batching (:func:`retrieval.dense.vector_cache_key`).
A disambiguator trained on features of these vectors depends on their last bits, so a cache entry
must hold exactly what this code would compute, or training stops being reproducible.
"""

from __future__ import annotations

import logging

import numpy as np

from linking.kb import KnowledgeBase
from retrieval.dense import EmbeddingCache, Encoder, embed_documents

logger = logging.getLogger(__name__)


def entity_text(name: str, description: str) -> str:
    """The text embedded for an entity: its name, then its description."""
    return f"{name}. {description}" if description else name


class EntityIndex:
    """Entity embeddings in KB order, a row lookup by id, and exact nearest-entity search.

    The search is one matrix product of the query vectors with every entity vector (a few tens of
    thousands of rows): exact, and cheaper for a document's handful of mentions than a FAISS call.

    Example:
        >>> index = EntityIndex.build(kb, encoder)  # doctest: +SKIP
        >>> index.nearest(encoder.encode(["the Bulls guard"]), k=5)  # doctest: +SKIP
    """

    def __init__(self, entity_ids: list[str], vectors: np.ndarray) -> None:
        if vectors.shape[0] != len(entity_ids):
            raise ValueError(f"{vectors.shape[0]} vectors for {len(entity_ids)} entities")
        self.entity_ids = entity_ids
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._row = {eid: i for i, eid in enumerate(entity_ids)}

    @classmethod
    def build(cls, kb: KnowledgeBase, encoder: Encoder, *, cache: EmbeddingCache | None = None) -> EntityIndex:
        """Embed every entity of ``kb`` (read from the cache when the same KB and encoder were seen)."""
        entities = kb.entities()
        texts = [entity_text(e.name, e.description) for e in entities]
        cache = cache if cache is not None else EmbeddingCache()
        vectors = embed_documents(encoder, texts, cache=cache, what="entities")
        logger.info("entity index: %d entities x %d dims", *vectors.shape)
        return cls([e.entity_id for e in entities], vectors)

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

        The order is total: score descending, then KB order, also among entities tied with the
        ``k``-th score.
        """
        query_vectors = np.asarray(query_vectors, dtype=np.float32)
        if query_vectors.ndim == 1:
            query_vectors = query_vectors[None, :]
        total = len(self.entity_ids)
        k = min(k, total)
        if k <= 0 or len(query_vectors) == 0:
            return [[] for _ in range(len(query_vectors))]
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
