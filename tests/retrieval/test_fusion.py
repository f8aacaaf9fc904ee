from __future__ import annotations

import pytest

from retrieval.errors import InvalidRequestError
from retrieval.fusion import FusionConfig, convex_combination, fuse, normalize_scores, reciprocal_rank_fusion
from retrieval.types import Hit

LEX = [Hit("a", 12.0), Hit("b", 9.0), Hit("c", 3.0)]
DEN = [Hit("c", 0.9), Hit("a", 0.8), Hit("d", 0.5)]


def test_rrf_scores_follow_cormack_formula() -> None:
    fused = {h.doc_id: h.score for h in reciprocal_rank_fusion([LEX, DEN], k=60)}
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["d"] == pytest.approx(1 / 63)
    assert [h.doc_id for h in reciprocal_rank_fusion([LEX, DEN], k=60)] == ["a", "c", "b", "d"]


def test_rrf_k_changes_how_much_the_top_rank_dominates() -> None:
    # x: ranks 1 and 10; y: ranks 3 and 3. A small k rewards x's single first place, k=60 y's consistency.
    one = [Hit(d, 1.0 / n) for n, d in enumerate(["x", "f1", "y", "f2", "f3"], start=1)]
    other = [Hit(d, 1.0 / n) for n, d in enumerate(["g1", "g2", "y", "g3", "g4", "g5", "g6", "g7", "g8", "x"], 1)]
    assert reciprocal_rank_fusion([one, other], k=0.01)[0].doc_id == "x"
    assert reciprocal_rank_fusion([one, other], k=60)[0].doc_id == "y"


def test_minmax_and_zscore_normalization() -> None:
    assert normalize_scores(LEX, "minmax") == {"a": 1.0, "b": pytest.approx(6 / 9), "c": 0.0}
    z = normalize_scores(LEX, "zscore")
    assert sum(z.values()) == pytest.approx(0.0, abs=1e-12)
    assert z["a"] > z["b"] > z["c"]
    assert normalize_scores([Hit("only", 5.0)], "minmax") == {"only": 1.0}


def test_convex_combination_weights_and_missing_documents() -> None:
    fused = {h.doc_id: h.score for h in convex_combination(LEX, DEN, alpha=0.25)}
    # dense minmax: c=1, a=0.75, d=0; lexical minmax: a=1, b=2/3, c=0. Missing -> that list's minimum (0).
    assert fused["a"] == pytest.approx(0.25 * 0.75 + 0.75 * 1.0)
    assert fused["b"] == pytest.approx(0.75 * (6 / 9))
    assert fused["c"] == pytest.approx(0.25)
    assert fused["d"] == pytest.approx(0.0)
    assert [h.doc_id for h in convex_combination(LEX, DEN, alpha=1.0)][:2] == ["c", "a"]
    assert [h.doc_id for h in convex_combination(LEX, DEN, alpha=0.0)][:2] == ["a", "b"]


def test_fuse_dispatches_on_config() -> None:
    assert fuse(LEX, DEN, FusionConfig()) == reciprocal_rank_fusion([LEX, DEN])
    cfg = FusionConfig(method="convex", alpha=0.3, normalization="zscore")
    assert fuse(LEX, DEN, cfg) == convex_combination(LEX, DEN, 0.3, "zscore")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"method": "borda"}, "fusion.method"),
        ({"rrf_k": 0}, "fusion.rrf_k"),
        ({"alpha": 1.5}, "fusion.alpha"),
        ({"normalization": "l2"}, "fusion.normalization"),
        ({"depth": 0}, "fusion.depth"),
        ({"depth": 5000}, "fusion.depth"),
    ],
)
def test_fusion_config_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        FusionConfig(**kwargs)
    assert info.value.field == field
