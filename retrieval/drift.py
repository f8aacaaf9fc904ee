"""Drift features of search: query length, top BM25 score, top dense score, dense score gap.

At build time an index records, per feature, a histogram of what its own pseudo-queries (titles
or opening words of a fixed sample of its documents) produce; the server compares live searches
with them by PSI. Histograms, the monitor and the reference file are generic and live in
:mod:`artifacts.drift`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

# Histogram, DriftMonitor and the reference file are re-exported for the service modules that
# still import them from here; new code imports them from artifacts.drift.
from artifacts.drift import REFERENCE_FILE, DriftMonitor, Histogram, read_reference, write_reference
from retrieval.types import Document, Hit

__all__ = [
    "REFERENCE_FILE",
    "SEARCH_FEATURES",
    "DriftMonitor",
    "Histogram",
    "pseudo_queries",
    "read_reference",
    "search_features",
    "write_reference",
]

SEARCH_FEATURES = ("query_length", "top_bm25", "top_dense", "dense_gap")


def search_features(query: str, bm25_hits: Sequence[Hit] | None, dense_hits: Sequence[Hit]) -> dict[str, float]:
    """The drift features of one search (missing lists contribute no feature)."""
    features = {"query_length": float(len(query.split()))}
    if bm25_hits is not None:
        features["top_bm25"] = bm25_hits[0].score if bm25_hits else 0.0
    if dense_hits:
        features["top_dense"] = dense_hits[0].score
        features["dense_gap"] = dense_hits[0].score - dense_hits[1].score if len(dense_hits) > 1 else 0.0
    return features


def pseudo_queries(documents: Sequence[Document], n: int = 300, seed: int = 13) -> list[str]:
    """A deterministic sample of query-like strings from the corpus: titles, else opening words."""
    rng = random.Random(seed)
    sample = rng.sample(list(documents), min(n, len(documents)))
    queries = []
    for doc in sample:
        words = (doc.title or doc.text).split()
        queries.append(" ".join(words[: rng.randint(3, 12)]) or doc.doc_id)
    return queries
