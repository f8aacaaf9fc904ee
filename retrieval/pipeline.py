"""The search pipeline: BM25 and dense retrieval, fusion, and optional learned reranking.

Example:
    >>> index = SearchIndex.load("indexes/scifact")  # doctest: +SKIP
    >>> searcher = Searcher(index, SentenceTransformerEncoder(index.encoder_info["name"]))  # doctest: +SKIP
    >>> result = searcher.search(SearchRequest("aspirin and heart attacks", top_k=5))  # doctest: +SKIP
    >>> [(h.doc_id, round(h.score, 3)) for h in result.hits]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from artifacts import IncompatibleArtifactError
from retrieval.dense import Encoder
from retrieval.drift import search_features
from retrieval.errors import InvalidRequestError, ShardsUnavailableError
from retrieval.fusion import FusionConfig, fuse
from retrieval.index import SearchIndex
from retrieval.shards import collect_missing
from retrieval.types import Document, Hit, ScoredHit

logger = logging.getLogger(__name__)

SEARCH_MODES = ("bm25", "dense", "hybrid")
MAX_QUERY_CHARS = 2048
MAX_TOP_K = 1000
MAX_RERANK_DEPTH = 1000


class Reranker(Protocol):
    """Rescores fused candidates. ``version`` names the model in responses and logs."""

    version: str

    def score(
        self,
        query: str,
        candidates: Sequence[ScoredHit],
        index: SearchIndex,
        query_vector: np.ndarray | None,
    ) -> np.ndarray:
        """One score per candidate (higher is better)."""
        ...


@dataclass(frozen=True)
class SearchRequest:
    """A validated search request. Construction raises ``InvalidRequestError`` naming the field."""

    query: str
    top_k: int = 10
    mode: str = "hybrid"
    fusion: FusionConfig = field(default_factory=FusionConfig)
    rerank: bool = False
    rerank_depth: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.query, str) or not self.query.strip():
            raise InvalidRequestError("query", "must not be empty or whitespace only")
        if len(self.query) > MAX_QUERY_CHARS:
            raise InvalidRequestError("query", f"is {len(self.query)} characters; the limit is {MAX_QUERY_CHARS}")
        if "\x00" in self.query:
            raise InvalidRequestError("query", "must not contain NUL characters")
        if not (1 <= self.top_k <= MAX_TOP_K):
            raise InvalidRequestError("top_k", f"must be within [1, {MAX_TOP_K}], got {self.top_k}")
        if self.mode not in SEARCH_MODES:
            raise InvalidRequestError("mode", f"must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")
        if not (1 <= self.rerank_depth <= MAX_RERANK_DEPTH):
            raise InvalidRequestError(
                "rerank_depth", f"must be within [1, {MAX_RERANK_DEPTH}], got {self.rerank_depth}"
            )

    @property
    def needs_vector(self) -> bool:
        return self.mode in ("dense", "hybrid")


@dataclass(frozen=True)
class SearchResult:
    """Ranked hits of one request, the version that served it and per-stage timings."""

    hits: tuple[ScoredHit, ...]
    index_version: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    reranker_version: str | None = None
    drift_features: dict[str, float] = field(default_factory=dict)
    missing_shards: tuple[str, ...] = ()  # shards of a remote index that did not answer (their hits are absent)


def snippet(document: Document, max_chars: int = 240) -> str:
    """The start of a document's text, cut at a word boundary.

    Only the head of the text is normalized (it runs for every hit of every response; splitting a
    whole abstract cost more than the BM25 search); the result is the same as for the whole text.
    """
    raw = document.text
    head = raw[: 4 * max_chars]
    text = " ".join(head.split())
    if len(text) <= max_chars and len(head) < len(raw):  # mostly whitespace so far: take it all
        text = " ".join(raw.split())
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars)
    return text[: cut if cut > max_chars // 2 else max_chars].rstrip(" ,;:") + "…"


class Searcher:
    """Runs search requests against one index (and optionally a reranker).

    The encoder must be the one the index was built with (same weights checksum); otherwise
    query and document vectors would live in different spaces and dense scores would be noise.
    """

    def __init__(self, index: SearchIndex, encoder: Encoder, reranker: Reranker | None = None) -> None:
        expected = index.encoder_info.get("checksum")
        if expected is not None and expected != encoder.checksum:
            raise IncompatibleArtifactError(
                f"index {index.version} was built with encoder {index.encoder_info.get('name')!r} "
                f"(weights {expected}); the loaded encoder {encoder.name!r} has weights {encoder.checksum}"
            )
        self.index = index
        self.encoder = encoder
        self.reranker = reranker

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(list(queries), batch_size=64)

    def search(self, request: SearchRequest) -> SearchResult:
        vector = self.encode_queries([request.query])[0] if request.needs_vector else None
        return self.run(request, vector)

    def batch_search(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        """Serve many requests; their queries are encoded in one batched encoder call."""
        needing = [i for i, r in enumerate(requests) if r.needs_vector]
        vectors: dict[int, np.ndarray] = {}
        if needing:
            matrix = self.encode_queries([requests[i].query for i in needing])
            vectors = dict(zip(needing, matrix, strict=True))
        return [self.run(request, vectors.get(i)) for i, request in enumerate(requests)]

    def run(self, request: SearchRequest, query_vector: np.ndarray | None) -> SearchResult:
        """Serve one request whose query vector (if its mode needs one) is already computed.

        ``missing_shards`` of the result names the shards of a sharded index that did not answer
        (remote shards only); the hits are then those of the shards that did.
        """
        with collect_missing() as missing:
            result = self._run(request, query_vector)
        if not missing:
            return result
        if len(missing) >= len(getattr(self.index, "shards", ())):
            raise ShardsUnavailableError(tuple(sorted(missing)))
        return replace(result, missing_shards=tuple(sorted(missing)))

    def _run(self, request: SearchRequest, query_vector: np.ndarray | None) -> SearchResult:
        timings: dict[str, float] = {}
        if request.rerank and self.reranker is None:
            raise InvalidRequestError("rerank", "no reranker is loaded on this server")
        if request.needs_vector and query_vector is None:
            raise ValueError("dense and hybrid modes need a query vector")
        wanted = max(request.top_k, request.rerank_depth if request.rerank else 0)
        depth = max(request.fusion.depth, wanted) if request.mode == "hybrid" else wanted

        bm25_hits: list[Hit] = []
        dense_hits: list[Hit] = []
        if request.mode in ("bm25", "hybrid"):
            t0 = time.perf_counter()
            bm25_hits = self.index.bm25.search(request.query, depth)
            timings["bm25"] = (time.perf_counter() - t0) * 1000
        if request.mode in ("dense", "hybrid"):
            t0 = time.perf_counter()
            dense_hits = self._dense_search(query_vector, depth)
            timings["dense"] = (time.perf_counter() - t0) * 1000

        bm25_scores = {h.doc_id: h.score for h in bm25_hits}
        dense_scores = {h.doc_id: h.score for h in dense_hits}
        if request.mode == "hybrid":
            t0 = time.perf_counter()
            ranked = fuse(bm25_hits, dense_hits, request.fusion)
            timings["fuse"] = (time.perf_counter() - t0) * 1000
            hits = [
                ScoredHit(h.doc_id, h.score, rank, bm25_scores.get(h.doc_id), dense_scores.get(h.doc_id), h.score)
                for rank, h in enumerate(ranked[:wanted], start=1)
            ]
        else:
            source = bm25_hits if request.mode == "bm25" else dense_hits
            hits = [
                ScoredHit(h.doc_id, h.score, rank, bm25_scores.get(h.doc_id), dense_scores.get(h.doc_id))
                for rank, h in enumerate(source[:wanted], start=1)
            ]

        reranker_version = None
        if request.rerank and hits:
            t0 = time.perf_counter()
            hits = self._rerank(request, hits, query_vector)
            timings["rerank"] = (time.perf_counter() - t0) * 1000
            reranker_version = self.reranker.version if self.reranker is not None else None
        features = search_features(request.query, bm25_hits if request.mode != "dense" else None, dense_hits)
        return SearchResult(tuple(hits[: request.top_k]), self.index.version, timings, reranker_version, features)

    def _dense_search(self, query_vector: np.ndarray | None, depth: int) -> list[Hit]:
        """The top ``depth`` dense hits, empty documents left out (their zero vectors match nothing)."""
        if query_vector is None:
            raise ValueError("dense and hybrid modes need a query vector")
        empty = self.index.empty_ids
        if not empty:
            return self.index.dense.search(query_vector, depth)[0]
        hits = self.index.dense.search(query_vector, depth + min(len(empty), depth))[0]
        return [hit for hit in hits if hit.doc_id not in empty][:depth]

    def _rerank(self, request: SearchRequest, hits: list[ScoredHit], vector: np.ndarray | None) -> list[ScoredHit]:
        assert self.reranker is not None
        head, tail = hits[: request.rerank_depth], hits[request.rerank_depth :]
        scores = np.asarray(self.reranker.score(request.query, head, self.index, vector), dtype=np.float64)
        order = sorted(range(len(head)), key=lambda i: (-scores[i], head[i].rank))
        reranked = [
            ScoredHit(
                head[i].doc_id, float(scores[i]), rank, head[i].bm25, head[i].dense, head[i].fused, float(scores[i])
            )
            for rank, i in enumerate(order, start=1)
        ]
        # Candidates beyond the rerank depth keep their order below the reranked ones.
        offset = len(reranked)
        return reranked + [
            ScoredHit(h.doc_id, h.score, offset + n, h.bm25, h.dense, h.fused) for n, h in enumerate(tail, start=1)
        ]
