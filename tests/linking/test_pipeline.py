from __future__ import annotations

import numpy as np
import pytest

from linking import (
    Disambiguator,
    DisambiguatorConfig,
    EntityLinker,
    KnowledgeBase,
    LinkerTrainingConfig,
    LinkOptions,
    Mention,
    MentionDetector,
    cross_validate,
    prepare_documents,
    train_disambiguator,
    train_linker,
)
from linking.evaluation import evaluate_linker
from linking.mentions import trim_span
from retrieval.errors import InvalidRequestError
from tests.linking.conftest import doc

TRAIN = [
    doc("1", "Michael Jordan scored for the Bulls in the NBA.", ("Michael Jordan", "Michael Jordan")),
    doc("2", "Michael Jordan starred as a boxer in the film Creed.", ("Michael Jordan", "Michael B. Jordan")),
    doc("3", "Professor Michael Jordan teaches machine learning.", ("Michael Jordan", "Michael I. Jordan")),
    doc("4", "Paris is a city in France.", ("Paris", "Paris")),
    doc("5", "Paris won the rugby league final.", ("Paris", "Paris Saint-Germain")),
    doc("6", "The Bulls and the NBA honoured Michael Jordan.", ("Michael Jordan", "Michael Jordan")),
    doc("7", "The actor Michael Jordan returned in the Creed film.", ("Michael Jordan", "Michael B. Jordan")),
    doc("8", "Machine learning by the professor Michael Jordan.", ("Michael Jordan", "Michael I. Jordan")),
]


@pytest.fixture
def linker(tiny_kb: KnowledgeBase, linking_encoder, nlp) -> EntityLinker:
    untrained = EntityLinker.build(tiny_kb, linking_encoder, detector=MentionDetector(nlp))
    config = LinkerTrainingConfig(DisambiguatorConfig(model_type="logistic"), cross_validate=False, augment=False)
    return train_linker(untrained, {"tiny": TRAIN}, config).linker


def test_context_decides_between_the_three_michael_jordans(linker: EntityLinker) -> None:
    text = "Michael Jordan starred in Creed, a film."
    links = linker.link(text, [Mention(0, 14, "Michael Jordan")])
    assert links[0].entity_id == "Michael B. Jordan"
    assert links[0].candidates[0].entity_id == "Michael B. Jordan"
    basketball = linker.link("Michael Jordan won NBA titles with the Bulls.", [Mention(0, 14, "Michael Jordan")])
    assert basketball[0].entity_id == "Michael Jordan"


def test_one_encoder_call_per_document_and_each_sentence_encoded_once(linker: EntityLinker, linking_encoder) -> None:
    linking_encoder.calls.clear()
    text = "Paris met Michael Jordan in Paris, France. Then Michael Jordan flew home."
    mentions = [Mention(0, 5, "Paris"), Mention(10, 24, "Michael Jordan"), Mention(28, 33, "Paris")]
    linker.link(text, [*mentions, Mention(48, 62, "Michael Jordan")])
    assert linking_encoder.calls == [2]  # two sentences, one call


def test_detection_links_ner_mentions(linker: EntityLinker) -> None:
    links = linker.link("Yesterday Michael Jordan visited Paris with friends.")
    surfaces = {link.mention.surface: link for link in links}
    assert "Michael Jordan" in surfaces and surfaces["Michael Jordan"].mention.label == "PERSON"
    assert surfaces["Paris"].mention.label == "GPE"
    assert all(link.entity_id is None or link.entity_id in linker.kb for link in links)


def test_nil_threshold_and_unknown_names(linker: EntityLinker) -> None:
    links = linker.link("Zorblax visited Paris.", [Mention(0, 7, "Zorblax"), Mention(16, 21, "Paris")])
    assert all(c.sources == ("dense",) for c in links[0].candidates)  # no name matches: dense only
    strict = linker.link("Zorblax visited Paris.", [Mention(16, 21, "Paris")], LinkOptions(nil_threshold=1.0))
    assert strict[0].is_nil and strict[0].candidates  # NIL, but the candidates are still reported
    hidden = linker.link(
        "Zorblax visited Paris.", [Mention(0, 7, "Zorblax")], LinkOptions(nil_threshold=1.0, include_nil=False)
    )
    assert hidden == []
    clear_winner = linker.link(
        "Zorblax visited Paris.", [Mention(16, 21, "Paris")], LinkOptions(nil_threshold=1.0, nil_margin=0.0)
    )
    assert not clear_winner[0].is_nil  # below the threshold, but NIL also needs a lead under the margin


def test_detected_mentions_follow_their_own_nil_rule(linker: EntityLinker) -> None:
    text = "Yesterday Michael Jordan visited Paris with friends."
    given = [Mention(10, 24, "Michael Jordan"), Mention(33, 38, "Paris")]
    linker.scorer.with_threshold(0.0, 1.0, detected=(1.01, 1.0))  # detected mentions: always NIL
    assert all(not link.is_nil for link in linker.link(text, given))  # given spans: the gold-span rule
    detected = linker.link(text)
    assert {"Michael Jordan", "Paris"} <= {link.mention.surface for link in detected}
    assert all(link.is_nil for link in detected)
    # the request's own threshold overrides both rules
    assert all(not link.is_nil for link in linker.link(text, options=LinkOptions(nil_threshold=0.0)))
    linker.scorer.with_threshold(0.0, 1.0)  # no detected rule: detected mentions use the gold-span rule
    assert all(not link.is_nil for link in linker.link(text))


def test_cross_validation_chooses_a_nil_rule_for_detected_mentions(linker: EntityLinker) -> None:
    extra = [
        doc("9", "Michael Jordan and the Bulls won in Paris, France.", ("Michael Jordan", "Michael Jordan")),
        doc("10", "In Paris, Michael Jordan filmed Creed as an actor.", ("Michael Jordan", "Michael B. Jordan")),
    ]
    originals = TRAIN + extra
    documents = prepare_documents(linker, originals, "tiny")
    detected = prepare_documents(linker, originals, "tiny", detected=True)
    assert all(d.detected for d in detected) and not any(d.detected for d in documents)
    # a detected span equal to a gold span carries its label; "Paris" in doc 9 is not annotated
    nine = detected[8]
    spans = {(m.start, m.end): m.surface for m in nine.prepared.mentions}
    assert (0, 14) in spans and any(s == "Paris" for s in spans.values())
    assert nine.labels.sum() == 1
    config = DisambiguatorConfig(model_type="logistic")
    cv = cross_validate(linker, documents, config, folds=2, detected=detected)
    assert cv.detected_rule is not None and cv.e2e_f1_overall is not None
    assert set(cv.e2e_f1_by_dataset) == {"tiny"}
    # unannotated detections ("Paris", "Bulls", "France") cost precision unless NIL: the rule makes some NIL
    assert cv.detected_rule[0] > 0.0
    assert cv.to_dict()["cv_detected_nil_threshold"] == cv.detected_rule[0]
    assert cv.e2e_f1_gold_rule is not None and cv.e2e_f1_gold_rule <= cv.e2e_f1_overall
    with pytest.raises(ValueError, match="gold-span counterpart"):
        cross_validate(linker, documents[:8], config, folds=2, detected=detected)


@pytest.mark.parametrize(
    ("text", "mentions", "options", "field"),
    [
        ("", None, LinkOptions(), "text"),
        ("   ", None, LinkOptions(), "text"),
        ("Paris", [Mention(0, 9, "Paris")], LinkOptions(), "mentions[0]"),
        ("Paris", None, LinkOptions(top_candidates=-1), "options.top_candidates"),
        ("Paris", None, LinkOptions(nil_threshold=1.5), "options.nil_threshold"),
        ("Paris", None, LinkOptions(nil_margin=-0.1), "options.nil_margin"),
    ],
)
def test_bad_requests_name_the_field(linker: EntityLinker, text, mentions, options, field) -> None:
    with pytest.raises(InvalidRequestError) as info:
        linker.link(text, mentions, options)
    assert info.value.field == field


def test_evaluate_linker_ed_on_training_documents(linker: EntityLinker) -> None:
    result = evaluate_linker(linker, TRAIN, "ed")
    assert result.counts.tp + result.counts.fn == len(TRAIN)
    assert result.counts.f1 >= 0.75
    assert result.candidate_recall()[30] == 1.0


def test_trim_span_drops_determiners_and_possessives() -> None:
    text = "the Bulls' coach and Jordan's team"
    assert trim_span(text, 0, 10) == (4, 9)
    assert trim_span(text, 21, 29) == (21, 27)
    assert trim_span("--", 0, 2) is None


def test_two_pass_lightgbm_model_round_trips_and_scores_in_the_linker(
    tiny_kb: KnowledgeBase, linking_encoder, nlp, tmp_path
) -> None:
    linker = EntityLinker.build(tiny_kb, linking_encoder, detector=MentionDetector(nlp))
    documents = prepare_documents(linker, TRAIN * 3, "tiny")
    config = DisambiguatorConfig(n_estimators=20, min_child_samples=2, objective="lambdarank")
    model = train_disambiguator(documents, config, folds=2)
    assert model.collective and model.second is not None
    model.save(tmp_path / "m", parents={}, params={}, inputs={})
    loaded, _ = Disambiguator.load(tmp_path / "m")
    linker.scorer = loaded
    prepared = linker.prepare("Michael Jordan starred in Creed.", [Mention(0, 14, "Michael Jordan")])
    scores = linker.score(prepared)
    assert np.all((scores > 0) & (scores < 1))  # lambdarank scores are squashed
    linker.scorer = model
    assert np.allclose(linker.score(prepared), scores)


def test_mention_form_columns_tell_pronouns_and_common_nouns_from_names(linker: EntityLinker) -> None:
    from linking.features import FEATURE_NAMES

    text = "He visited Paris. The president of Iraq met the Washington Post."
    spans = ["He", "Paris", "president", "Washington Post"]
    mentions = [Mention(text.index(s), text.index(s) + len(s), s) for s in spans]
    prepared = linker.prepare(text, mentions)
    names = ("surface_lowercase", "surface_pronoun", "surface_capitalized")
    column = {name: FEATURE_NAMES.index(name) for name in names}
    rows = {}
    for mention, (lo, hi) in zip(prepared.mentions, prepared.groups(), strict=True):
        assert hi > lo, f"{mention.surface} has no candidates"
        block = prepared.features[lo:hi]
        assert np.all(block == block[0], axis=0)[list(column.values())].all()  # per mention, not per candidate
        rows[mention.surface] = {name: float(block[0, c]) for name, c in column.items()}
    assert rows["He"] == {"surface_lowercase": 0.0, "surface_pronoun": 1.0, "surface_capitalized": 1.0}
    assert rows["president"] == {"surface_lowercase": 1.0, "surface_pronoun": 0.0, "surface_capitalized": 0.0}
    assert rows["Paris"]["surface_pronoun"] == 0.0 and rows["Paris"]["surface_capitalized"] == 1.0
    assert rows["Washington Post"]["surface_capitalized"] == 1.0


def test_title_columns_mark_qualified_titles_and_whole_title_matches(linker: EntityLinker) -> None:
    from linking.features import FEATURE_NAMES

    text = "Victoria and Paris met in Washington."
    spans = ["Victoria", "Paris"]
    prepared = linker.prepare(text, [Mention(text.index(s), text.index(s) + len(s), s) for s in spans])
    qualified, title = FEATURE_NAMES.index("name_qualified"), FEATURE_NAMES.index("exact_title")
    rows = {}
    for mention, cands, (lo, _hi) in zip(prepared.mentions, prepared.candidates, prepared.groups(), strict=True):
        for offset, cand in enumerate(cands):
            rows[(mention.surface, cand.entity_id)] = tuple(prepared.features[lo + offset, [qualified, title]])
    assert rows[("Victoria", "Victoria (Australia)")] == (1.0, 0.0)  # a qualified title, matched without it
    assert rows[("Paris", "Paris")] == (0.0, 1.0)  # the primary topic, matched whole
    assert rows[("Paris", "Paris Saint-Germain")] == (0.0, 0.0)


def test_acronym_column_marks_a_capitalized_surface_that_spells_the_name(linker: EntityLinker) -> None:
    from linking.features import FEATURE_NAMES

    text = "The UN met. The U.N. voted. The United Nations closed. Le un."
    spans = [("UN", text.index("UN")), ("U.N.", text.index("U.N.")), ("United Nations", text.index("United"))]
    spans.append(("un", text.rindex("un")))
    prepared = linker.prepare(text, [Mention(i, i + len(s), s) for s, i in spans])
    column = FEATURE_NAMES.index("acronym_match")
    rows = {}
    for mention, cands, (lo, _hi) in zip(prepared.mentions, prepared.candidates, prepared.groups(), strict=True):
        for offset, cand in enumerate(cands):
            rows[(mention.surface, cand.entity_id)] = float(prepared.features[lo + offset, column])
    assert rows[("UN", "United Nations")] == 1.0
    assert rows[("U.N.", "United Nations")] == 1.0
    assert rows[("United Nations", "United Nations")] == 0.0  # the full name is not its acronym
    assert rows[("un", "United Nations")] == 0.0  # lower case: a word, not an acronym
    assert sum(rows.values()) == 2.0  # no other candidate is marked
