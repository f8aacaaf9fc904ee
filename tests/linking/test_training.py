from __future__ import annotations

from linking import AliasEntry, Entity, KnowledgeBase, shorten_person_mentions
from linking.training import plateau_rule
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
