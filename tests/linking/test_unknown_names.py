"""Names the KB holds under a longer name, and names it does not hold at all.

"Bulls" must reach Chicago Bulls without an alias row for it; "Michael Jordan" must be NIL in a KB
with no Michael Jordan rather than a link to whichever entity its context resembles.
"""

from __future__ import annotations

import pytest

from linking import (
    DisambiguatorConfig,
    EntityLinker,
    KnowledgeBase,
    LinkerTrainingConfig,
    LinkOptions,
    Mention,
    MentionDetector,
    train_linker,
)
from linking.candidates import CandidateGenerator
from linking.kb import short_organization_names
from linking.pipeline import LinkerConfig
from linking.types import AliasEntry, Entity
from tests.conftest import FakeEncoder
from tests.linking.conftest import KEYWORDS, doc

ENTITIES = [
    Entity("Chicago", "Chicago", "Chicago is a city in Illinois.", entity_type="place"),
    Entity(
        "Chicago Bulls",
        "Chicago Bulls",
        "The Chicago Bulls are a basketball team in the NBA.",
        entity_type="organization",
    ),
    Entity("University of Chicago", "University of Chicago", "A university in Chicago.", entity_type="organization"),
    Entity("Chicago Club", "Chicago Club", "A private club in Chicago.", entity_type="organization"),
    Entity("Apple Inc.", "Apple Inc.", "Apple is a company that makes computers.", entity_type="organization"),
    Entity("Apple", "Apple", "Apple is a town in a valley.", entity_type="place"),
    Entity("Michael Jackson", "Michael Jackson", "Michael Jackson was an American singer.", entity_type="person"),
    Entity(
        "Sylvester Stallone",
        "Sylvester Stallone",
        "Sylvester Stallone is an actor in the film Creed.",
        entity_type="person",
    ),
    Entity("Paris", "Paris", "Paris is the capital city of France.", entity_type="place"),
]
ALIASES = [
    AliasEntry("Chicago", "Chicago", 1),
    AliasEntry("Michael Jackson", "Michael Jackson", 1),
    AliasEntry("Stallone", "Sylvester Stallone", 1),
    AliasEntry("Paris", "Paris", 1),
]


@pytest.fixture
def kb() -> KnowledgeBase:
    return KnowledgeBase(ENTITIES, ALIASES)


def test_an_organisation_named_after_its_place_is_found_by_the_rest_of_its_name(kb: KnowledgeBase) -> None:
    assert kb.variant_lookup("Bulls") == ["Chicago Bulls"]
    assert kb.variant_lookup("the Bulls") == ["Chicago Bulls"]
    candidates = CandidateGenerator(kb).generate("Bulls")
    assert [(c.entity_id, c.sources) for c in candidates] == [("Chicago Bulls", ("variant",))]


def test_only_a_leading_place_is_dropped_and_type_words_stay_whole(kb: KnowledgeBase) -> None:
    assert kb.variant_lookup("Inc.") == []  # "Apple" is a place here, but "Inc." names no one
    assert kb.variant_lookup("Club") == []  # a type word on its own
    assert kb.variant_lookup("of Chicago") == []
    assert "University of Chicago" not in kb.variant_lookup("Chicago")
    assert short_organization_names("Chicago Bulls", {"chicago"}) == {"bulls"}
    assert short_organization_names("Chicago Bulls", set()) == set()  # no place in the KB: no short form
    assert short_organization_names("Boston Red Sox (baseball)", {"boston"}) == {"red sox"}


TRAIN = [
    doc("1", "Michael Jackson sang at the concert.", ("Michael Jackson", "Michael Jackson")),
    doc("2", "Stallone starred as an actor in the film Creed.", ("Stallone", "Sylvester Stallone")),
    doc("3", "Paris is a city in France.", ("Paris", "Paris")),
    doc("4", "The singer Michael Jackson died in 2009.", ("Michael Jackson", "Michael Jackson")),
    doc("5", "The Bulls won the NBA title in Chicago.", ("Bulls", "Chicago Bulls"), ("Chicago", "Chicago")),
    doc("6", "Stallone and the film Creed.", ("Stallone", "Sylvester Stallone")),
]


def trained_linker(kb: KnowledgeBase, config: LinkerConfig, nlp) -> EntityLinker:
    untrained = EntityLinker.build(kb, FakeEncoder(KEYWORDS), detector=MentionDetector(nlp), config=config)
    training = LinkerTrainingConfig(DisambiguatorConfig(model_type="logistic"), cross_validate=False, augment=False)
    return train_linker(untrained, {"tiny": TRAIN}, training).linker


def test_a_name_the_kb_lacks_is_nil_when_only_context_found_candidates(kb: KnowledgeBase, nlp) -> None:
    text = "Michael Jordan starred in Creed."
    mention = [Mention(0, 14, "Michael Jordan")]
    unguarded = trained_linker(kb, LinkerConfig(unnamed_min_score=0.0, unnamed_min_score_detected=0.0), nlp)
    unguarded.scorer.with_threshold(0.01, 1.0)
    link = unguarded.link(text, mention)[0]
    assert link.candidates and all(c.sources == ("dense",) for c in link.candidates)  # no name matches
    assert link.entity_id is not None  # the failure the guard exists for: a link by context alone
    guarded = EntityLinker(
        kb,
        unguarded.encoder,
        unguarded.scorer,
        detector=unguarded.detector,
        entity_index=unguarded.entity_index,
        config=LinkerConfig(unnamed_min_score=1.0),
    )
    nil = guarded.link(text, mention)[0]
    assert nil.is_nil and nil.candidates == link.candidates  # NIL, the candidates still reported
    # A name match is not subject to the guard, nor is a request that asks for no NIL at all.
    paris = guarded.link("Paris is lovely in spring.", [Mention(0, 5, "Paris")])[0]
    assert paris.entity_id == "Paris" and paris.score < 1.0
    assert guarded.link(text, mention, LinkOptions(nil_threshold=0.0))[0].entity_id == link.entity_id


def test_by_default_a_detected_mention_that_no_name_matches_is_nil(kb: KnowledgeBase, nlp) -> None:
    linker = trained_linker(kb, LinkerConfig(), nlp)
    linker.scorer.with_threshold(0.01, 1.0)
    text = "Michael Jordan starred in Creed. The Bulls won again in Chicago."
    links = {link.mention.surface: link for link in linker.link(text)}
    assert links["Michael Jordan"].is_nil and links["Michael Jordan"].candidates  # context-only candidates
    assert links["Chicago"].entity_id == "Chicago"  # name matches are left to the model and its NIL rule
    given = linker.link(text, [Mention(0, 14, "Michael Jordan")])[0]
    assert given.is_nil == (given.candidates[0].score < 0.25)  # given spans: only low context-only scores are NIL
    bulls = linker.link(text, [Mention(37, 42, "Bulls")])[0]
    assert bulls.entity_id == "Chicago Bulls" and "variant" in bulls.candidates[0].sources
