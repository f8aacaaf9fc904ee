from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from artifacts import Manifest
from linking import FEATURE_NAMES, Disambiguator, DisambiguatorConfig, ModelNotTrainedError
from linking.features import BASE_FEATURE_NAMES, collective_features


def synthetic(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    ctx = FEATURE_NAMES.index("ctx_sim")
    labels = (features[:, ctx] > 0.3).astype(np.int32)
    return features, labels


@pytest.mark.parametrize("model_type", ["lightgbm", "logistic"])
def test_learns_the_signal_and_round_trips(model_type: str, tmp_path: Path) -> None:
    features, labels = synthetic()
    model = Disambiguator.train(features, labels, DisambiguatorConfig(model_type=model_type, n_estimators=50))
    test_x, test_y = synthetic(seed=1)
    accuracy = ((model.score(test_x) > 0.5) == test_y).mean()
    assert accuracy > 0.9
    model.with_threshold(0.2).save(tmp_path / "m", parents={"kb": "abc"}, params={}, inputs={})
    loaded, manifest = Disambiguator.load(tmp_path / "m")
    assert np.allclose(loaded.score(test_x), model.score(test_x))
    assert loaded.nil_threshold == 0.2
    assert manifest.kind == "linker" and manifest.parents == {"kb": "abc"}
    assert Manifest.read(tmp_path / "m").params["nil_threshold"] == 0.2
    assert loaded.nil_rule(detected=True) == loaded.nil_rule() == (0.2, 1.0)  # no rule of their own
    model.with_threshold(0.2, 0.3, detected=(0.6, 1.0)).save(tmp_path / "d", parents={}, params={}, inputs={})
    loaded, manifest = Disambiguator.load(tmp_path / "d")
    assert loaded.nil_rule() == (0.2, 0.3) and loaded.nil_rule(detected=True) == (0.6, 1.0)
    assert manifest.params["nil_threshold_detected"] == 0.6


def test_untrained_model_raises() -> None:
    with pytest.raises(ModelNotTrainedError):
        Disambiguator().score(np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32))


def test_training_needs_both_classes() -> None:
    features, _ = synthetic(20)
    with pytest.raises(ValueError, match="both"):
        Disambiguator.train(features, np.ones(20))


def test_lambdarank_needs_group_sizes() -> None:
    features, labels = synthetic(40)
    with pytest.raises(ValueError, match="group_sizes"):
        Disambiguator.train(features, labels, DisambiguatorConfig(objective="lambdarank", n_estimators=5))
    model = Disambiguator.train(
        features, labels, DisambiguatorConfig(objective="lambdarank", n_estimators=5), group_sizes=[10] * 4
    )
    assert model.score(features).shape == (40,)


def test_collective_features_vote_with_the_other_mentions_first_pass_picks() -> None:
    # mention 0 ("page"): a town (row 0) or a guitarist (row 1); mention 1 ("clapton"): one guitarist (row 2)
    vectors = np.asarray([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    base = np.zeros((3, len(FEATURE_NAMES)), dtype=np.float32)
    first = np.asarray([0.7, 0.3, 0.9])
    out = collective_features(base, [(0, 2), (2, 3)], ["page", "clapton"], vectors, first)
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    assert out[1, col["resolved_coherence"]] > out[0, col["resolved_coherence"]]
    assert out[1, col["resolved_coherence_rank"]] == 1.0 and out[0, col["resolved_coherence_vs_first"]] == 0.0
    assert list(out[:2, col["first_rank"]]) == [1.0, 2.0]
    assert out[1, col["first_score_gap"]] == pytest.approx(-0.4)
    assert np.all(out[:, : len(BASE_FEATURE_NAMES)] == 0)  # base columns untouched
