"""The mention prior: counted on gold annotations, filled out of fold in training, kept in the model.

The documents are cut from aida_train (the sentences around the mentions, document ids as in AIDA;
the rugby league team under the tiny KB's id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from linking import (
    CandidateConfig,
    CandidateGenerator,
    Disambiguator,
    DisambiguatorConfig,
    Entity,
    EntityLinker,
    KnowledgeBase,
    LinkerConfig,
    LinkerTrainingConfig,
    Mention,
    MentionDetector,
    prepare_documents,
    shorten_person_mentions,
    train_disambiguator,
    train_linker,
)
from linking.features import FEATURE_NAMES, PRIOR_FEATURE_NAMES
from linking.normalization import normalize_alias
from linking.prior import NIL_KEY, MentionPrior
from linking.training import FoldPriors, _folds, dateline_day, with_prior_candidates
from tests.linking.conftest import ALIASES, ENTITIES, doc

PRIOR = [FEATURE_NAMES.index(name) for name in PRIOR_FEATURE_NAMES]
# the columns that only the mention's own surface decides (prior_entity_frequency counts the
# candidate entity under any surface: another document may name it)
SURFACE_PRIOR = [FEATURE_NAMES.index(name) for name in PRIOR_FEATURE_NAMES if name != "prior_entity_frequency"]
SEEN = FEATURE_NAMES.index("prior_seen")
SURFACE_COUNT = FEATURE_NAMES.index("prior_surface_log_count")

RUGBY = "Results of European Super League rugby league matches on Saturday: Paris 14 Bradford 27 Wigan 78"
# Each document names its own surfaces: no surface of one occurs in another.
DISTINCT = [
    doc(
        "104 Suspected",
        "PARIS 1996-08-22 Algerian security forces have shot dead three guerrillas.",
        ("PARIS", "Paris"),
    ),
    doc(
        "10 Israel",
        "Itamar Rabinovich, who as Israel's ambassador to Washington conducted unfruitful negotiations with Syria.",
        ("Washington", "Washington, D.C."),
        ("Itamar Rabinovich", None),
    ),
    doc(
        "17 Iraq",
        "Iraqi President Saddam Hussein has told visiting Russian ultra-nationalist Vladimir Zhirinovsky.",
        ("Saddam Hussein", "Saddam Hussein"),
    ),
    doc(
        "73 RTRS",
        "Number six MaliVai Washington of the United States and American Todd Martin, the seventh seed.",
        ("MaliVai Washington", "MaliVai Washington"),
    ),
    doc(
        "120 Thais",
        "Daniel Westlake, 46, from Victoria, made the first sucessful escape from Klongprem prison.",
        ("Victoria", "Victoria (Australia)"),
    ),
    doc(
        "192 Jordan",
        "King Hussein began calling for change in Baghdad following top Iraqi defections.",
        ("Hussein", "Hussein of Jordan"),
    ),
    doc(
        "17 Iraq U.N.",
        "Zhirinovsky would press the Russian government to help end U.N. trade sanctions on Iraq.",
        ("U.N.", "United Nations"),
    ),
    doc(
        "445 CRICKET",
        "Australia M. Slater c P. Strang b Whittall 50 S. Waugh c Campbell b Whittall 82",
        ("S. Waugh", "Steve Waugh"),
    ),
]
# "Paris" and "Washington" in several documents, for the counts themselves.
REPEATED = [
    doc("25 PRESS", "PARIS 1996-08-22 These are leading stories in Le Monde.", ("PARIS", "Paris")),
    doc(
        "104 Suspected",
        "PARIS 1996-08-22 Algerian security forces have shot dead three guerrillas.",
        ("PARIS", "Paris"),
    ),
    doc("248 RUGBY", RUGBY, ("Paris", "Paris Saint-Germain")),
    doc("323 RUGBY", "Leeds 22 6 0 16 555 745 12 Paris 22 3 1 18 398 795 7", ("Paris", "Paris Saint-Germain")),
    doc("10 Israel", "Israel's ambassador to Washington conducted negotiations.", ("Washington", "Washington, D.C.")),
    doc("173 Buffett", "WASHINGTON 1996-08-23 Omaha billionaire Warren Buffett.", ("WASHINGTON", "Washington, D.C.")),
    doc(
        "42 TENNIS",
        "6 - MaliVai Washington (U.S.) beat Alex Corretja (Spain) 6-4 6-2",
        ("MaliVai Washington", "MaliVai Washington"),
        ("Alex Corretja", None),
    ),
    doc(
        "17 Iraq",
        "Iraqi President Saddam Hussein has told visiting Russian ultra-nationalist Vladimir Zhirinovsky.",
        ("Saddam Hussein", "Saddam Hussein"),
        ("Vladimir Zhirinovsky", None),
    ),
]


def test_the_table_counts_gold_annotations_by_normalized_surface_nil_included() -> None:
    prior = MentionPrior.from_documents(REPEATED)
    assert len(prior) == sum(len(d.mentions) for d in REPEATED) == 10
    assert prior.count("Paris") == 4 and prior.count("paris", "Paris") == 2  # "PARIS" and "Paris" are one key
    assert prior.count("Paris", "Paris Saint-Germain") == 2 and prior.count("Washington", "Washington, D.C.") == 2
    assert prior.count("Alex Corretja") == 1 and prior.count("Alex Corretja", NIL_KEY) == 1
    assert prior.count("Moscow") == 0
    assert prior.probability("Paris", "Paris") == pytest.approx(2 / 5)  # c(m, e) / (c(m) + 1)
    assert prior.probability("Moscow", "Moscow") == 0.0
    # adds up and subtracts per document; never below zero
    parts = [MentionPrior.from_documents([d]) for d in REPEATED]
    assert sum(parts, MentionPrior()) == prior
    assert prior - parts[0] == MentionPrior.from_documents(REPEATED[1:])
    with pytest.raises(ValueError, match="negative"):
        parts[0] - prior
    assert MentionPrior.from_dict(prior.to_dict()) == prior


def test_the_columns_are_p_e_given_m_its_argmax_counts_and_the_nil_share() -> None:
    from linking.types import Candidate

    prior = MentionPrior.from_documents(REPEATED)
    paris = [Candidate("Paris"), Candidate("Paris Saint-Germain"), Candidate("Paris, Texas")]
    columns = prior.columns(["paris", "alex corretja", "moscow"], [paris, [Candidate("Alex Corretja")], paris[:1]])
    named = {name: columns[:, j] for j, name in enumerate(PRIOR_FEATURE_NAMES)}
    assert named["prior_prob"].tolist() == pytest.approx([0.4, 0.4, 0.0, 0.0, 0.0])
    assert named["prior_prob_gap"].tolist() == pytest.approx([0.0, 0.0, -0.4, 0.0, 0.0])
    # a tie goes to the lower entity id, whatever the counting order
    assert named["prior_is_argmax"].tolist() == [1, 0, 0, 0, 0]
    assert named["prior_pair_log_count"].tolist() == pytest.approx(np.log1p([2, 2, 0, 0, 0]).tolist())
    assert named["prior_surface_log_count"].tolist() == pytest.approx(np.log1p([4, 4, 4, 1, 0]).tolist())
    assert named["prior_nil_share"].tolist() == pytest.approx([0, 0, 0, 0.5, 0])
    assert named["prior_seen"].tolist() == [1, 1, 1, 1, 0]
    # an entity's count under every surface, for an unseen surface too
    assert named["prior_entity_frequency"].tolist() == pytest.approx(np.log1p([2, 2, 0, 0, 2]).tolist())


def test_out_of_fold_prior_columns_count_the_other_folds_only(tiny_kb: KnowledgeBase, linking_encoder) -> None:
    linker = EntityLinker(tiny_kb, linking_encoder)
    originals = prepare_documents(linker, REPEATED, "aida_train")
    copies = prepare_documents(linker, shorten_person_mentions(REPEATED, tiny_kb), "aida_train")
    assert copies  # "Saddam Hussein" -> "Hussein" and "MaliVai Washington" -> "Washington"
    documents = originals + copies
    splits = _folds(documents, 3)
    priors = FoldPriors(documents, splits)
    # a short-name copy is held out with its source and is not counted
    for copy in copies:
        source = next(d for d in originals if d.document.doc_id == copy.document.doc_id.split("#")[0])
        assert priors.fold(copy) == priors.fold(source)
    assert priors.total == MentionPrior.from_documents(REPEATED)
    for held_out in (None, 0, 1, 2):
        extra = () if held_out is None else (held_out,)
        filled = priors.out_of_fold(documents, *extra)
        for raw, document in zip(documents, filled, strict=True):
            excluded = {priors.fold(raw), *extra}
            others = [d.document for d in originals if priors.fold(d) not in excluded]
            expected = MentionPrior.from_documents(others).fill(
                raw.prepared.features, raw.prepared.mentions, raw.prepared.candidates
            )
            assert np.array_equal(document.prepared.features, expected)
            # the count of the document's own surface is what the other folds hold, never its own
            own = {d.document.doc_id for d in originals if priors.fold(d) in excluded}
            for mention, (lo, hi) in zip(raw.prepared.mentions, raw.prepared.groups(), strict=True):
                if hi > lo:
                    key = normalize_alias(mention.surface)
                    counted = sum(
                        normalize_alias(g.surface) == key for d in REPEATED if d.doc_id not in own for g in d.mentions
                    )
                    assert np.expm1(document.prepared.features[lo, SURFACE_COUNT]) == pytest.approx(counted)
        # the prepared rows are left as they were (prior columns at zero)
        assert all(not d.prepared.features[:, PRIOR].any() for d in documents)


def test_no_training_row_sees_its_own_documents_counts(
    tiny_kb: KnowledgeBase, linking_encoder, nlp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every surface of DISTINCT occurs in one document only, so every prior column that the
    surface decides must be zero in every matrix any pass is trained on (cross-validation folds and
    the final fit); counting a document's own annotations would make them non-zero. The saved
    counts hold every surface, so the same columns are non-zero when the model links new text."""
    matrices: list[np.ndarray] = []
    train = Disambiguator.train.__func__  # type: ignore[attr-defined]

    def spy(cls, features, labels, config=None, **kwargs):
        matrices.append(features[:, SURFACE_PRIOR].copy())
        return train(cls, features, labels, config, **kwargs)

    monkeypatch.setattr(Disambiguator, "train", classmethod(spy))
    linker = EntityLinker.build(tiny_kb, linking_encoder, detector=MentionDetector(nlp))
    config = LinkerTrainingConfig(DisambiguatorConfig(model_type="logistic"), folds=2, augment=False)
    trained = train_linker(linker, {"aida_train": DISTINCT}, config)
    assert len(matrices) >= 2 * 2 + 2  # two passes per fold, two in the final fit
    assert all(not m.any() for m in matrices)
    assert trained.model.mention_prior == MentionPrior.from_documents(DISTINCT)
    prepared = linker.prepare(DISTINCT[0].text, [Mention(0, 5, "PARIS")])
    filled = trained.model.mention_prior.fill(prepared.features, prepared.mentions, prepared.candidates)
    assert filled[:, SEEN].all() and filled[0, FEATURE_NAMES.index("prior_prob")] == pytest.approx(0.5)


def test_the_prior_is_saved_with_the_model_and_an_older_model_still_loads(
    tiny_kb: KnowledgeBase, linking_encoder, tmp_path: Path
) -> None:
    linker = EntityLinker(tiny_kb, linking_encoder)
    documents = prepare_documents(linker, REPEATED, "aida_train")
    model = train_disambiguator(documents, DisambiguatorConfig(model_type="logistic"), folds=2)
    assert model.mention_prior == MentionPrior.from_documents(REPEATED)
    model.save(tmp_path / "model", parents={}, params={}, inputs={})
    loaded, manifest = Disambiguator.load(tmp_path / "model")
    assert manifest.format_version == 3 and loaded.mention_prior == model.mention_prior
    assert loaded.config.mention_prior and loaded.config == model.config
    rows = documents[2].with_prior(model.mention_prior).prepared.features
    assert np.array_equal(loaded.score(rows), model.score(rows))
    assert not np.array_equal(model.score(rows), model.score(documents[2].prepared.features))  # the columns are used

    # a model from before the prior: no prior columns in its feature names, no counts
    old = train_disambiguator(documents, DisambiguatorConfig(model_type="logistic", mention_prior=False), folds=2)
    assert old.mention_prior is None
    data = old.to_dict()
    for part in (data, data["second"]):
        keep = [j for j, name in enumerate(part["feature_names"][: part["columns"]]) if name not in PRIOR_FEATURE_NAMES]
        for key in ("weights", "mean", "scale"):
            part[key] = [part[key][j] for j in keep]
        part["columns"] = len(keep)
        part["feature_names"] = [name for name in part["feature_names"] if name not in PRIOR_FEATURE_NAMES]
        del part["config"]["mention_prior"], part["config"]["drop"], part["config"]["prior_candidates"]
    reloaded = Disambiguator.from_dict(data)
    assert not reloaded.config.mention_prior and reloaded.mention_prior is None
    assert not reloaded.config.prior_candidates  # nor candidates from counts it does not have
    noisy = rows.copy()
    noisy[:, PRIOR] = 7.0  # columns it was not trained on are not read
    assert np.allclose(reloaded.score(noisy), old.score(rows))


def test_a_kb_without_the_priors_entities_links_to_what_it_has(tiny_kb: KnowledgeBase, linking_encoder) -> None:
    linker = EntityLinker(tiny_kb, linking_encoder)
    documents = prepare_documents(linker, REPEATED, "aida_train")
    model = train_disambiguator(documents, DisambiguatorConfig(model_type="logistic"), folds=2)
    assert model.mention_prior is not None and model.mention_prior.count("Paris", "Paris Saint-Germain") == 2
    smaller = KnowledgeBase(
        [e for e in ENTITIES if e.entity_id != "Paris Saint-Germain"],
        [a for a in ALIASES if a.entity_id != "Paris Saint-Germain"],
    )
    trained = EntityLinker(smaller, linking_encoder, model)
    start = RUGBY.index("Paris")
    (link,) = trained.link(RUGBY, [Mention(start, start + 5, "Paris")])
    assert link.entity_id in (None, "Paris")
    assert "Paris Saint-Germain" not in {c.entity_id for c in link.candidates}
    prepared = trained.prepare(RUGBY, [Mention(start, start + 5, "Paris")])
    filled = model.mention_prior.fill(prepared.features, prepared.mentions, prepared.candidates)
    paris = [c.entity_id for c in prepared.candidates[0]].index("Paris")
    assert filled[paris, FEATURE_NAMES.index("prior_prob")] == pytest.approx(2 / 5)


def test_the_stories_of_one_day_are_held_out_together(tiny_kb: KnowledgeBase, linking_encoder) -> None:
    """Same-day stories share names and entities; a fold that trains on a held-out story's siblings
    would estimate the prior columns (and the NIL rule) better than new days allow."""
    documents = prepare_documents(EntityLinker(tiny_kb, linking_encoder), REPEATED, "aida_train")
    by_id = {d.document.doc_id: d for d in documents}
    assert by_id["25 PRESS"].group == by_id["104 Suspected"].group == "aida_train/day 1996-08-22"
    assert by_id["173 Buffett"].group == "aida_train/day 1996-08-23"
    assert by_id["248 RUGBY"].group == "aida_train/248 RUGBY"  # no dateline: a group of its own
    for _, test_idx in _folds(documents, 3):
        held = {documents[i].document.doc_id for i in test_idx}
        assert ("25 PRESS" in held) == ("104 Suspected" in held)


def test_a_dateline_is_a_date_near_the_top() -> None:
    assert dateline_day("WASHINGTON 1996-08-23 Omaha billionaire Warren Buffett.") == "1996-08-23"
    assert dateline_day(RUGBY) is None
    assert dateline_day("x" * 300 + " BRUSSELS 1996-08-22") is None  # a date deep in the text is no dateline


# aida_train writes "China" for the People's Republic of China, a name no alias table files it under.
PRC = Entity("People's Republic of China", "People's Republic of China", "", entity_type="place")
CHINA = [
    doc(
        "3 China",
        "China says Taiwan spoils atmosphere for talks. BEIJING 1996-08-22 China on Thursday accused Taipei.",
        ("China", PRC.entity_id),
    ),
    doc(
        "201 Nepal",
        "Nepal's king leaves on week-long visit to China. KATHMANDU 1996-08-23 King Birendra left Nepal on Friday.",
        ("China", PRC.entity_id),
    ),
    doc(
        "575 Ten",
        "Ten missing in north China ship collision. BEIJING 1996-08-27 Ten people were missing.",
        ("China", PRC.entity_id),
    ),
    doc("173 Buffett", "WASHINGTON 1996-08-23 Omaha billionaire Warren Buffett.", ("WASHINGTON", "Washington, D.C.")),
]


def test_the_annotations_propose_candidates_beyond_the_cap(tiny_kb: KnowledgeBase) -> None:
    key = normalize_alias("Washington")
    prior = MentionPrior(
        {
            key: {
                "Washington, D.C.": 5,
                "Not in the KB": 4,
                "MaliVai Washington": 3,
                "The Washington Post": 1,
                NIL_KEY: 9,
            }
        }
    )
    assert prior.top_entities("WASHINGTON", 3) == ["Washington, D.C.", "Not in the KB", "MaliVai Washington"]
    generator = CandidateGenerator(tiny_kb, None, CandidateConfig(k=1, prior_k=3))
    assert [c.entity_id for c in generator.generate("Washington")] == ["Washington, D.C."]
    (found,) = generator.generate_batch(["Washington"], prior=prior)
    # the top three counted entities the KB has, NIL never, past the cap of one
    assert [(c.entity_id, c.sources) for c in found] == [
        ("Washington, D.C.", ("alias", "prior", "variant")),
        ("MaliVai Washington", ("prior", "variant")),
    ]
    off = CandidateGenerator(tiny_kb, None, CandidateConfig(k=1, prior_k=0), prior=prior)
    assert [c.entity_id for c in off.generate("Washington")] == ["Washington, D.C."]


def test_training_candidates_come_from_the_other_folds_counts(tiny_kb: KnowledgeBase, linking_encoder) -> None:
    kb = KnowledgeBase([*ENTITIES, PRC], ALIASES)
    linker = EntityLinker(kb, linking_encoder, config=LinkerConfig(candidates=CandidateConfig(dense_k=0)))
    documents = prepare_documents(linker, CHINA, "aida_train")
    assert all(PRC.entity_id not in ids(d) for d in documents)  # no name generator reaches it
    priors = FoldPriors(documents, _folds(documents, 4))  # a day per fold
    extended = with_prior_candidates(linker, documents, priors)
    for before, after in zip(documents, extended, strict=True):
        assert after.group == before.group
        if before.document.doc_id == "173 Buffett":
            assert after is before  # nothing to add: prepared once only
            continue
        # the other two China stories name it: a candidate, labelled as the gold one
        assert PRC.entity_id in ids(after) and after.labels.sum() == 1
    # one China story alone: its own annotation never proposes its gold entity
    alone = prepare_documents(linker, CHINA[:1] + CHINA[3:], "aida_train")
    priors = FoldPriors(alone, _folds(alone, 2))
    assert all(PRC.entity_id not in ids(d) for d in with_prior_candidates(linker, alone, priors))


def test_a_model_trained_with_prior_candidates_links_the_name_the_annotations_gave(linking_encoder, nlp) -> None:
    kb = KnowledgeBase([*ENTITIES, PRC], ALIASES)
    linker = EntityLinker(
        kb,
        linking_encoder,
        detector=MentionDetector(nlp),
        config=LinkerConfig(candidates=CandidateConfig(dense_k=0)),
    )
    config = LinkerTrainingConfig(DisambiguatorConfig(model_type="logistic"), folds=2, augment=False)
    trained = train_linker(linker, {"aida_train": CHINA + REPEATED}, config)
    text = "Australia foreign minister arrives in China. BEIJING 1996-08-22 Australian Foreign Minister Downer."
    start = text.index("China")
    (link,) = trained.linker.link(text, [Mention(start, start + 5, "China")])
    assert link.entity_id == PRC.entity_id and link.candidates[0].sources == ("prior",)
    # a model trained without them keeps to the name generators
    without = LinkerTrainingConfig(
        DisambiguatorConfig(model_type="logistic", prior_candidates=False), folds=2, augment=False
    )
    (link,) = train_linker(linker, {"aida_train": CHINA + REPEATED}, without).linker.link(
        text, [Mention(start, start + 5, "China")]
    )
    assert link.entity_id is None and not link.candidates


def ids(document) -> set[str]:
    return {c.entity_id for cands in document.prepared.candidates for c in cands}
