"""LightGBM trees compiled to native code score exactly as LightGBM does, and are compiled once per model and CPU."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from linking import (
    Disambiguator,
    DisambiguatorConfig,
    EntityLinker,
    KnowledgeBase,
    LinkerConfig,
    MentionDetector,
    load_spacy,
    prepare_documents,
)
from linking.compiled_trees import compile_booster
from linking.training import train_disambiguator
from tests.linking.conftest import ALIASES, ENTITIES, KEYWORDS, FakeEncoder
from tests.linking.test_training import TRAIN

lleaves = pytest.importorskip("lleaves")


@pytest.fixture(scope="module")
def prepared():
    linker = EntityLinker(
        KnowledgeBase(ENTITIES, ALIASES), FakeEncoder(KEYWORDS), detector=MentionDetector(load_spacy())
    )
    return prepare_documents(linker, TRAIN, "tiny")


def two_pass_model(prepared, objective: str = "binary") -> Disambiguator:
    config = DisambiguatorConfig(n_estimators=40, min_child_samples=2, collective=True, objective=objective)
    return train_disambiguator(prepared, config)


@pytest.mark.parametrize("objective", ["binary", "lambdarank"])
def test_compiled_trees_score_as_lightgbm_in_both_passes(prepared, objective: str, tmp_path: Path) -> None:
    model = two_pass_model(prepared, objective)
    assert model.second is not None
    features = np.vstack([doc.prepared.features for doc in prepared])
    expected_first, expected_second = model.score(features), model.second.score(features)
    model.compile_trees(tmp_path)
    assert model._compiled is not None and model.second._compiled is not None
    np.testing.assert_allclose(model.score(features), expected_first, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.second.score(features), expected_second, rtol=0, atol=1e-12)
    assert len(list(tmp_path.glob("*.o"))) == 2 and not list(tmp_path.glob("*.tmp*"))


def test_a_compiled_model_is_read_from_the_cache_and_a_damaged_entry_is_compiled_again(
    prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    booster = two_pass_model(prepared)._booster
    features = np.vstack([doc.prepared.features for doc in prepared])[:, : booster.num_feature()]
    expected = booster.predict(features, num_threads=1)
    assert compile_booster(booster, tmp_path) is not None
    (entry,) = tmp_path.glob("*.o")
    caches: list[tuple[str, bool]] = []
    real = lleaves.Model.compile

    def recording(self, cache=None, **kwargs):
        caches.append((Path(cache).name, Path(cache).is_file()))
        return real(self, cache=cache, **kwargs)

    monkeypatch.setattr(lleaves.Model, "compile", recording)
    np.testing.assert_allclose(compile_booster(booster, tmp_path).predict(features), expected, rtol=0, atol=1e-12)
    assert caches == [(entry.name, True)]  # loaded, not compiled
    entry.write_bytes(b"not object code")
    with caplog.at_level(logging.WARNING, logger="linking.compiled_trees"):
        again = compile_booster(booster, tmp_path)
    assert again is not None and "ignoring unreadable compiled trees" in caplog.text and "checksum" in caplog.text
    np.testing.assert_allclose(again.predict(features), expected, rtol=0, atol=1e-12)


def test_without_lleaves_the_model_scores_with_lightgbm(
    prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = two_pass_model(prepared)
    monkeypatch.setitem(sys.modules, "lleaves", None)  # import lleaves raises ImportError
    with caplog.at_level(logging.WARNING, logger="linking.compiled_trees"):
        model.compile_trees(tmp_path)
    assert model._compiled is None and "scoring with LightGBM" in caplog.text
    features = np.vstack([doc.prepared.features for doc in prepared])
    assert model.score(features).shape == (len(features),)


def test_open_compiles_the_trees_unless_told_not_to(prepared, tmp_path: Path) -> None:
    kb = KnowledgeBase(ENTITIES, ALIASES)
    kb.save(tmp_path / "kb")
    two_pass_model(prepared).save(tmp_path / "model", parents={}, params={}, inputs={})
    encoder, detector = FakeEncoder(KEYWORDS), MentionDetector(load_spacy())
    compiled = EntityLinker.open(tmp_path / "kb", tmp_path / "model", encoder, detector=detector)
    plain = EntityLinker.open(
        tmp_path / "kb", tmp_path / "model", encoder, detector=detector, config=LinkerConfig(compile_trees=False)
    )
    assert compiled.scorer._compiled is not None and plain.scorer._compiled is None
    text = "Michael Jordan starred in Creed, a film shot in Paris."
    fast, reference = compiled.link(text), plain.link(text)
    assert [(link.mention, link.entity_id) for link in fast] == [(link.mention, link.entity_id) for link in reference]
    assert [link.score for link in fast] == pytest.approx([link.score for link in reference], abs=1e-12)
