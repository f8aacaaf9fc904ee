from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexes import Manifest
from linking import FEATURE_NAMES, Disambiguator, DisambiguatorConfig, ModelNotTrainedError


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


def test_untrained_model_raises() -> None:
    with pytest.raises(ModelNotTrainedError):
        Disambiguator().score(np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32))


def test_training_needs_both_classes() -> None:
    features, _ = synthetic(20)
    with pytest.raises(ValueError, match="both"):
        Disambiguator.train(features, np.ones(20))
