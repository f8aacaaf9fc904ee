from __future__ import annotations

from pathlib import Path

import pytest

from artifacts.drift import read_reference
from linking import (
    AliasEntry,
    DisambiguatorConfig,
    Entity,
    EntityLinker,
    KnowledgeBase,
    LinkerTrainingConfig,
    MentionDetector,
    PriorScorer,
    shorten_person_mentions,
    train_linker,
)
from linking.drift import LINKING_FEATURES
from linking.training import plateau_rule
from retrieval.dense import EmbeddingCache
from tests.linking.conftest import doc


def test_person_names_are_cut_to_a_real_name_word_and_offsets_follow() -> None:
    kb = KnowledgeBase(
        [
            Entity("Elizabeth II", "Elizabeth II", "Elizabeth II was a queen.", entity_type="person"),
            Entity("F. W. de Klerk", "F. W. de Klerk", "F. W. de Klerk was a president.", entity_type="person"),
            Entity("Saddam Hussein", "Saddam Hussein", "Saddam Hussein was president of Iraq.", entity_type="person"),
            Entity("Hussein of Jordan", "Hussein of Jordan", "Hussein was king of Jordan.", entity_type="person"),
            Entity("South Africa", "South Africa", "South Africa is a country.", entity_type="place"),
        ],
        [AliasEntry("Hussein", "Hussein of Jordan", 1)],
    )
    text = "Elizabeth II met F. W. de Klerk in South Africa; Saddam Hussein was not there."
    document = doc(
        "d",
        text,
        ("Elizabeth II", "Elizabeth II"),
        ("F. W. de Klerk", "F. W. de Klerk"),
        ("South Africa", "South Africa"),
        ("Saddam Hussein", "Saddam Hussein"),
    )
    (short,) = shorten_person_mentions([document], kb)
    assert short.doc_id == "d#short"
    # not the regnal number "II" or the initial "F." (whatever the draw between first and last
    # name); "Hussein" is the form the alias table knows
    for seed in range(8):
        (copy,) = shorten_person_mentions([document], kb, seed=seed)
        assert [m.surface for m in copy.mentions] == ["Elizabeth", "Klerk", "South Africa", "Hussein"]
    assert [m.entity_id for m in short.mentions] == [m.entity_id for m in document.mentions]
    assert all(short.text[m.start : m.end] == m.surface for m in short.mentions)
    assert short.text == "Elizabeth met Klerk in South Africa; Hussein was not there."
    # a document without a full person name yields no copy
    assert shorten_person_mentions([doc("e", "South Africa won.", ("South Africa", "South Africa"))], kb) == []


def test_the_nil_threshold_is_the_middle_of_the_flat_top_of_the_curve() -> None:
    # A flat CV curve with a noisy spike at 0.04: the arg-max would take 0.04, a threshold that
    # moves with the seed; the rule takes the middle of the thresholds within PLATEAU of the best.
    curve = {(t, 1.0): 0.844 for t in (0.0, 0.02)}
    curve.update({(0.04, 1.0): 0.850})
    curve.update({(t, 1.0): 0.847 for t in (0.06, 0.08, 0.10, 0.12, 0.14, 0.16)})
    curve.update({(t, 1.0): 0.830 for t in (0.18, 0.20)})
    curve.update({(t, 0.1): f1 - 0.01 for (t, _), f1 in list(curve.items())})
    assert plateau_rule(curve) == (0.10, 1.0)
    assert plateau_rule(curve, plateau=0.0) == (0.04, 1.0)
    # the margin is the best rule's; a lone best point is its own plateau
    curve[(0.06, 0.1)] = 0.9
    assert plateau_rule(curve) == (0.06, 0.1)


TRAIN = [
    doc("1", "Michael Jordan scored for the Bulls in the NBA.", ("Michael Jordan", "Michael Jordan")),
    doc("2", "Michael Jordan starred as a boxer in the film Creed.", ("Michael Jordan", "Michael B. Jordan")),
    doc("3", "Professor Michael Jordan teaches machine learning.", ("Michael Jordan", "Michael I. Jordan")),
    doc("4", "Paris is a city in France.", ("Paris", "Paris")),
    doc("5", "Paris won the rugby league final.", ("Paris", "Paris Saint-Germain")),
    doc("6", "The Bulls and the NBA honoured Michael Jordan.", ("Michael Jordan", "Michael Jordan")),
    doc("7", "The actor Michael Jordan returned in the Creed film.", ("Michael Jordan", "Michael B. Jordan")),
    doc("8", "Machine learning by the professor Michael Jordan.", ("Michael Jordan", "Michael I. Jordan")),
    doc("9", "Michael Jordan and the Bulls won in Paris, France.", ("Michael Jordan", "Michael Jordan")),
    doc("10", "In Paris, Michael Jordan filmed Creed as an actor.", ("Michael Jordan", "Michael B. Jordan")),
]


def test_train_linker_cross_validates_and_the_saved_model_opens_as_the_same_linker(
    kb_files: tuple[Path, Path], linking_encoder, nlp, tmp_path: Path
) -> None:
    KnowledgeBase.from_files([kb_files[0]], [kb_files[1]]).save(tmp_path / "kb")
    kb = KnowledgeBase.load(tmp_path / "kb")
    linker = EntityLinker.build(kb, linking_encoder, detector=MentionDetector(nlp))
    config = LinkerTrainingConfig(DisambiguatorConfig(model_type="logistic"), folds=2)
    trained = train_linker(linker, {"tiny": TRAIN}, config)
    assert trained.cv is not None and trained.transfer is None
    assert (trained.model.nil_threshold, trained.model.nil_margin) == (trained.cv.threshold, trained.cv.margin)
    assert trained.model.metrics["cv_f1"] == trained.cv.f1_overall
    # the detected-mention rule is measured but, by default, not used
    assert trained.cv.detected_rule is not None and trained.model.nil_threshold_detected is None
    assert isinstance(linker.scorer, PriorScorer) and trained.linker.scorer is trained.model
    assert set(trained.drift_reference) == set(LINKING_FEATURES)

    manifest = trained.save(tmp_path / "model")
    assert manifest.parents == {"kb": kb.manifest.content_id, "encoder": linking_encoder.checksum}
    assert manifest.params["folds"] == 2 and manifest.params["augment"] is True
    assert read_reference(tmp_path / "model") == trained.drift_reference
    opened = EntityLinker.open(tmp_path / "kb", tmp_path / "model", linking_encoder, detector=MentionDetector(nlp))
    assert opened.model_version == manifest.version
    text = "Michael Jordan starred in Creed, a film shot in Paris."
    assert opened.link(text) == trained.linker.link(text)
    baseline = EntityLinker.open(tmp_path / "kb", None, linking_encoder, detector=MentionDetector(nlp))
    assert isinstance(baseline.scorer, PriorScorer) and baseline.model_version is None


def test_train_linker_rejects_settings_it_cannot_honour(tiny_kb: KnowledgeBase, linking_encoder) -> None:
    linker = EntityLinker(tiny_kb, linking_encoder)
    with pytest.raises(ValueError, match=r"^folds"):
        train_linker(linker, {"tiny": TRAIN}, LinkerTrainingConfig(folds=1))
    with pytest.raises(ValueError, match=r"^transfer"):
        train_linker(linker, {"tiny": TRAIN}, LinkerTrainingConfig(transfer=True))
    with pytest.raises(ValueError, match=r"^benchmarks"):
        train_linker(linker, {})


def test_the_constructor_encodes_nothing_and_derived_linkers_share_or_rebuild_vectors(
    tiny_kb: KnowledgeBase, linking_encoder, tmp_path: Path
) -> None:
    linking_encoder.calls.clear()
    lazy = EntityLinker(tiny_kb, linking_encoder)
    assert linking_encoder.calls == []  # no entity vectors until they are needed
    built = EntityLinker.build(tiny_kb, linking_encoder, cache=EmbeddingCache(tmp_path / "cache"))
    assert linking_encoder.calls and len(built.entity_index.entity_ids) == len(tiny_kb)
    assert built.with_model(PriorScorer()).entity_index is built.entity_index
    smaller = KnowledgeBase(tiny_kb.entities()[:3], [])
    assert len(built.with_kb(smaller).entity_index.entity_ids) == 3
    assert lazy.entity_index.vectors.shape == built.entity_index.vectors.shape  # built on first use
