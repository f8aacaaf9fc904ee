from __future__ import annotations

from linking.normalization import acronym, guess_entity_type, name_variants, normalize_alias, strip_qualifier


def test_normalize_alias_ignores_case_diacritics_punctuation_and_the() -> None:
    assert normalize_alias("The Beatles") == normalize_alias("beatles") == "beatles"
    assert normalize_alias("Röntgen") == "rontgen"
    assert normalize_alias("Al-Maliki") == "al maliki"
    assert normalize_alias("The") == "the"  # an article alone is kept, not emptied


def test_strip_qualifier_and_acronym() -> None:
    assert strip_qualifier("Creed (film)") == "Creed"
    assert strip_qualifier("Paris, Texas") == "Paris"
    assert acronym("United Nations") == "UN"
    assert acronym("Federal Bureau of Investigation") == "FBI"
    assert acronym("Paris") is None


def test_person_variants_include_surname_and_given_name_but_places_do_not() -> None:
    assert name_variants("Saddam Hussein", is_person=True) == {"saddam hussein", "saddam", "hussein"}
    assert "york" not in name_variants("New York", is_person=False)
    assert "un" in name_variants("United Nations", is_person=False)


def test_guess_entity_type_from_description_cues() -> None:
    assert guess_entity_type("Tom Hanks (born 1956) is an American actor.") == "person"
    assert guess_entity_type("Lyon is a city in France.") == "place"
    assert guess_entity_type("Acme is an American company.") == "organization"
    assert guess_entity_type("A banana is a fruit.") == "other"
