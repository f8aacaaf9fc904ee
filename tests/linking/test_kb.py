from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifacts import CorruptArtifactError, Manifest
from linking import KBFormatError, KnowledgeBase


def test_alias_lookup_is_ordered_by_rank_and_normalized(tiny_kb: KnowledgeBase) -> None:
    assert [e.entity_id for e in tiny_kb.alias_lookup("Michael Jordan")] == [
        "Michael Jordan",
        "Michael B. Jordan",
        "Michael I. Jordan",
    ]
    assert tiny_kb.alias_lookup("MICHAEL JORDAN!")[0].entity_id == "Michael Jordan"
    assert tiny_kb.alias_lookup("Nobody") == []


def test_variants_reach_entities_the_alias_table_lacks(tiny_kb: KnowledgeBase) -> None:
    assert "MaliVai Washington" not in [e.entity_id for e in tiny_kb.alias_lookup("Washington")]
    assert "MaliVai Washington" in tiny_kb.variant_lookup("Washington")
    assert "United Nations" in tiny_kb.variant_lookup("U.N.")


def test_fuzzy_keys_find_misspellings(tiny_kb: KnowledgeBase) -> None:
    keys = [key for key, _ in tiny_kb.fuzzy_keys("Sadam Husein")]
    assert "saddam hussein" in keys


def test_build_save_load_round_trip(kb_files: tuple[Path, Path], tmp_path: Path) -> None:
    kb = KnowledgeBase.from_files([kb_files[0]], [kb_files[1]])
    manifest = kb.save(tmp_path / "kb")
    loaded = KnowledgeBase.load(tmp_path / "kb")
    assert len(loaded) == len(kb) == 13
    assert loaded.content_id == manifest.content_id
    assert Manifest.read(tmp_path / "kb", kind="kb").stats["entities"] == 13
    assert [e.entity_id for e in loaded.alias_lookup("Paris")] == ["Paris", "Paris Saint-Germain"]


def test_short_description_is_kept_and_changes_the_content_id(tmp_path: Path) -> None:
    entities = tmp_path / "entities.jsonl"
    row = {"id": "Washington, D.C.", "name": "Washington, D.C.", "description": "Washington, D.C., formally the"}
    entities.write_text(json.dumps({**row, "short_description": " capital city of the United States "}) + "\n")
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps(row) + "\n")
    aliases = tmp_path / "aliases.tsv"
    aliases.write_text("alias\tentity\trank\nWashington\tWashington, D.C.\t1\n")
    kb = KnowledgeBase.from_files([entities], [aliases])
    assert kb.entity("Washington, D.C.").short_description == "capital city of the United States"
    kb.save(tmp_path / "kb")
    loaded = KnowledgeBase.load(tmp_path / "kb")
    assert loaded.entity("Washington, D.C.").short_description == "capital city of the United States"
    without = KnowledgeBase.from_files([plain], [aliases])
    assert without.entity("Washington, D.C.").short_description == ""
    assert without.content_id != kb.content_id


def test_load_detects_a_damaged_kb(kb_files: tuple[Path, Path], tmp_path: Path) -> None:
    KnowledgeBase.from_files([kb_files[0]], [kb_files[1]]).save(tmp_path / "kb")
    with open(tmp_path / "kb" / "aliases.tsv", "a", encoding="utf-8") as handle:
        handle.write("Extra\tParis\t1\n")
    with pytest.raises(CorruptArtifactError):
        KnowledgeBase.load(tmp_path / "kb")


def test_files_merge_so_entities_can_be_added_later(kb_files: tuple[Path, Path], tmp_path: Path) -> None:
    more_entities = tmp_path / "more.jsonl"
    more_entities.write_text(json.dumps({"id": "Lyon", "name": "Lyon", "description": "Lyon is a city."}) + "\n")
    more_aliases = tmp_path / "more.tsv"
    more_aliases.write_text("alias\tentity\tprior\nParis\tLyon\t0.9\n")
    kb = KnowledgeBase.from_files([kb_files[0], more_entities], [kb_files[1], more_aliases])
    assert "Lyon" in kb
    assert "Lyon" in [e.entity_id for e in kb.alias_lookup("Paris")]


@pytest.mark.parametrize(
    ("entity_line", "alias_lines", "bad_file", "line", "message"),
    [
        ('{"name": "No id"}', "alias\tentity\trank\n", "entities", 2, "missing or empty 'id'"),
        ("{not json", "alias\tentity\trank\n", "entities", 2, "not valid JSON"),
        ('{"id": "A", "aliases": "x"}', "alias\tentity\trank\n", "entities", 2, "'aliases' must be a list"),
        ('{"id": "A", "short_description": 3}', "alias\tentity\trank\n", "entities", 2, "'short_description' must be"),
        ('{"id": "A"}', "alias\tentity\trank\nA\tGhost\t1\n", "aliases", 2, "unknown entity 'Ghost'"),
        ('{"id": "A"}', "alias\tentity\trank\nA\tA\n", "aliases", 2, "expected 3 tab-separated fields"),
        ('{"id": "A"}', "alias\tentity\trank\nA\tA\tfirst\n", "aliases", 2, "is not a number"),
        ('{"id": "A"}', "alias,entity,rank\n", "aliases", 1, "header must be"),
        ('{"id": "Z0"}', "alias\tentity\trank\n", "entities", 2, "duplicate entity id"),
    ],
)
def test_bad_rows_name_file_and_line(
    tmp_path: Path, entity_line: str, alias_lines: str, bad_file: str, line: int, message: str
) -> None:
    entities = tmp_path / "entities.jsonl"
    entities.write_text('{"id": "Z0", "name": "Zero"}\n' + entity_line + "\n", encoding="utf-8")
    aliases = tmp_path / "aliases.tsv"
    aliases.write_text(alias_lines, encoding="utf-8")
    with pytest.raises(KBFormatError) as info:
        KnowledgeBase.from_files([entities], [aliases])
    expected = entities if bad_file == "entities" else aliases
    assert info.value.path == str(expected)
    assert info.value.line == line
    assert message in str(info.value)
