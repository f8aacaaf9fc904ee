from __future__ import annotations

from linking import Candidate, KnowledgeBase, Link, Mention, propagate_entities


def make(text: str, surface: str, entity: str | None, occurrence: int = 0) -> Link:
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(surface, start + 1)
    return Link(Mention(start, start + len(surface), surface), entity, 0.9, (Candidate(entity or "x"),))


def test_short_forms_inherit_the_long_mention_entity(tiny_kb: KnowledgeBase) -> None:
    text = "Saddam Hussein was tried. Later Hussein spoke. The UN and the United Nations met."
    links = [
        make(text, "Saddam Hussein", "Saddam Hussein"),
        make(text, "Hussein", "Hussein of Jordan", occurrence=1),
        make(text, "UN", None),
        make(text, "United Nations", "United Nations"),
    ]
    out = propagate_entities(links, tiny_kb)
    assert out[1].entity_id == "Saddam Hussein" and out[1].coreferent
    assert out[2].entity_id == "United Nations" and out[2].coreferent
    assert not out[0].coreferent and not out[3].coreferent
    assert "Saddam Hussein" in [c.entity_id for c in out[1].candidates]


def test_no_propagation_when_the_short_form_is_not_a_name_of_that_entity(tiny_kb: KnowledgeBase) -> None:
    text = "The Washington Post reported from Washington."
    links = [make(text, "Washington Post", "The Washington Post"), make(text, "Washington", "Washington, D.C.", 1)]
    out = propagate_entities(links, tiny_kb)
    assert out[1].entity_id == "Washington, D.C." and not out[1].coreferent
