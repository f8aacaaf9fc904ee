"""Fusing the lexical and the dense ranked lists into one.

Two methods:

* Reciprocal rank fusion (Cormack, Clarke & Buettcher, "Reciprocal Rank Fusion outperforms
  Condorcet and individual Rank Learning Methods", SIGIR 2009):
  ``RRF(d) = sum_lists 1 / (k + rank_list(d))`` with ranks starting at 1. ``k`` (60 in the paper)
  damps the weight of the very top ranks: the larger ``k``, the flatter the contribution curve.
  Only ranks are used, so the retrievers' score scales never matter.
* Convex combination of normalized scores: ``alpha * dense'(d) + (1 - alpha) * bm25'(d)`` where
  each list's scores are normalized per query, by min-max to [0, 1] or by z-score. A document
  missing from one list takes that list's lowest normalized score (it ranked below the depth).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from retrieval.errors import InvalidRequestError
from retrieval.types import Hit

FUSION_METHODS = ("rrf", "convex")
NORMALIZATIONS = ("minmax", "zscore")


@dataclass(frozen=True)
class FusionConfig:
    """How the two lists are fused, and how deep each retriever goes before fusing."""

    method: str = "rrf"
    rrf_k: float = 60.0
    alpha: float = 0.5
    normalization: str = "minmax"
    depth: int = 100

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise InvalidRequestError(
                "fusion.method", f"must be one of {', '.join(FUSION_METHODS)}, got {self.method!r}"
            )
        if not (self.rrf_k > 0 and np.isfinite(self.rrf_k)):
            raise InvalidRequestError("fusion.rrf_k", f"must be a positive number, got {self.rrf_k}")
        if not (0.0 <= self.alpha <= 1.0):
            raise InvalidRequestError("fusion.alpha", f"must be within [0, 1], got {self.alpha}")
        if self.normalization not in NORMALIZATIONS:
            raise InvalidRequestError(
                "fusion.normalization", f"must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}"
            )
        if not (1 <= self.depth <= 1000):
            raise InvalidRequestError("fusion.depth", f"must be within [1, 1000], got {self.depth}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reciprocal_rank_fusion(ranked_lists: Sequence[Sequence[Hit]], k: float = 60.0) -> list[Hit]:
    """Fuse ranked lists by RRF (Cormack et al. 2009); best first, ties broken by doc id.

    Example:
        >>> a = [Hit("x", 9.0), Hit("y", 5.0)]
        >>> b = [Hit("y", 0.9), Hit("z", 0.8)]
        >>> [h.doc_id for h in reciprocal_rank_fusion([a, b])]
        ['y', 'x', 'z']
    """
    fused: dict[str, float] = {}
    for hits in ranked_lists:
        for rank, hit in enumerate(hits, start=1):
            fused[hit.doc_id] = fused.get(hit.doc_id, 0.0) + 1.0 / (k + rank)
    return _sorted_hits(fused)


def normalize_scores(hits: Sequence[Hit], method: str = "minmax") -> dict[str, float]:
    """Per-query normalized scores of one list: min-max to [0, 1], or z-scores."""
    if not hits:
        return {}
    scores = np.array([h.score for h in hits], dtype=np.float64)
    if method == "minmax":
        low, high = scores.min(), scores.max()
        normalized = (scores - low) / (high - low) if high > low else np.ones_like(scores)
    elif method == "zscore":
        std = scores.std()
        normalized = (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
    else:
        raise InvalidRequestError("fusion.normalization", f"unknown normalization {method!r}")
    return {h.doc_id: float(v) for h, v in zip(hits, normalized, strict=True)}


def convex_combination(
    lexical: Sequence[Hit], dense: Sequence[Hit], alpha: float = 0.5, normalization: str = "minmax"
) -> list[Hit]:
    """``alpha * dense + (1 - alpha) * lexical`` on per-query normalized scores."""
    lex = normalize_scores(lexical, normalization)
    den = normalize_scores(dense, normalization)
    lex_floor = min(lex.values(), default=0.0)
    den_floor = min(den.values(), default=0.0)
    fused = {
        doc_id: alpha * den.get(doc_id, den_floor) + (1.0 - alpha) * lex.get(doc_id, lex_floor)
        for doc_id in {*lex, *den}
    }
    return _sorted_hits(fused)


def fuse(lexical: Sequence[Hit], dense: Sequence[Hit], config: FusionConfig) -> list[Hit]:
    """Fuse the two lists as ``config`` says."""
    if config.method == "rrf":
        return reciprocal_rank_fusion([lexical, dense], k=config.rrf_k)
    return convex_combination(lexical, dense, alpha=config.alpha, normalization=config.normalization)


def _sorted_hits(scores: dict[str, float]) -> list[Hit]:
    return [Hit(doc_id, score) for doc_id, score in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]
