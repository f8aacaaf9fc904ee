"""Linking input files with a new user's mistakes: every error names the file and line.

Files are written to ``tmp_path``: bad bytes, bad JSON, missing and ill-typed fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linking import BenchmarkFormatError, KBFormatError, KnowledgeBase, read_benchmark
from linking.kb import read_aliases, read_entities

BAD_BYTES = b"\xff\xfe"
ENTITY_ROWS = [
    {"id": "Chicago Bulls", "name": "Chicago Bulls", "description": "The Chicago Bulls are a basketball team."},
    {"id": "Paris", "name": "Paris", "description": "Paris is the capital city of France."},
]
DOCUMENT = {"id": "a", "text": "Paris", "mentions": [{"start": 0, "end": 5, "surface": "Paris", "entity": "Paris"}]}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def json_line(row: dict) -> bytes:
    return json.dumps(row).encode()


def test_invalid_utf8_in_an_entity_file_names_file_line_and_offset(tmp_path: Path) -> None:
    bad = b'{"id": "Caf' + BAD_BYTES + b'", "name": "x"}'
    path = write_lines(tmp_path / "entities.jsonl", [json_line(ENTITY_ROWS[0]), json_line(ENTITY_ROWS[1]), bad])
    with pytest.raises(KBFormatError, match=r"entities\.jsonl:3: not valid UTF-8: byte 0xff at offset 11") as info:
        read_entities(path)
    assert (info.value.line, Path(info.value.path).name) == (3, "entities.jsonl")


def test_invalid_utf8_in_an_alias_table_names_file_and_line(tmp_path: Path) -> None:
    entities = write_lines(tmp_path / "entities.jsonl", [json_line(row) for row in ENTITY_ROWS])
    aliases = write_lines(
        tmp_path / "aliases.tsv",
        [b"alias\tentity\trank", b"Bulls\tChicago Bulls\t1", b"Pa" + BAD_BYTES + b"\tParis\t1"],
    )
    with pytest.raises(KBFormatError, match=r"aliases\.tsv:3: not valid UTF-8"):
        read_aliases(aliases)
    with pytest.raises(KBFormatError, match=r"aliases\.tsv:3: not valid UTF-8"):
        KnowledgeBase.from_files([entities], [aliases])


def test_kb_errors_after_blank_lines_keep_the_file_line(tmp_path: Path) -> None:
    entities = write_lines(tmp_path / "entities.jsonl", [json_line(ENTITY_ROWS[0]), b"", json_line(ENTITY_ROWS[0])])
    with pytest.raises(
        KBFormatError, match=r"entities\.jsonl:3: duplicate entity id 'Chicago Bulls' \(first at .*:1\)"
    ):
        KnowledgeBase.from_files([entities], [])
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(b"\xef\xbb\xbf" + b"".join(json_line(row) + b"\r\n" for row in ENTITY_ROWS))
    assert [e.entity_id for e in read_entities(crlf)] == ["Chicago Bulls", "Paris"]


def test_invalid_utf8_in_a_benchmark_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bench.jsonl", [json_line(DOCUMENT), json_line(DOCUMENT), b'{"text": "' + BAD_BYTES])
    with pytest.raises(BenchmarkFormatError, match=r"bench\.jsonl:3: not valid UTF-8") as info:
        read_benchmark(path)
    assert info.value.line == 3


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "b"}, r"field 'text' must be a string, but it is missing"),
        ({"id": "b", "text": 7}, r"field 'text' must be a string"),
        ({"id": "b", "text": "Hi", "mentions": {"start": 0}}, r"field 'mentions' must be a list"),
        ({"id": "b", "text": "Hi", "mentions": [{"end": 2}]}, r"mentions\[0\]\.start must be an integer .* missing"),
        ({"id": "b", "text": "Hi", "mentions": [{"start": "0", "end": 2}]}, r"mentions\[0\]\.start .* it is \"0\""),
        ({"id": "b", "text": "Hi", "mentions": [{"start": 0, "end": 9}]}, r"mentions\[0\]: span 0-9 is not inside"),
        ({"id": "b", "text": "Hi", "mentions": [{"start": 0, "end": 2, "entity": 3}]}, r"mentions\[0\]\.entity"),
        (["b", "Hi"], r"expected a JSON object"),
    ],
)
def test_malformed_benchmark_rows_name_line_and_field(tmp_path: Path, row: object, message: str) -> None:
    path = write_lines(tmp_path / "bench.jsonl", [json_line(DOCUMENT), json.dumps(row).encode()])
    with pytest.raises(BenchmarkFormatError, match=r"bench\.jsonl:2: " + message):
        read_benchmark(path)


def test_a_benchmark_that_is_not_json_or_missing_is_named(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bench.jsonl", [json_line(DOCUMENT), b'{"id": "b", "text": '])
    with pytest.raises(BenchmarkFormatError, match=r"bench\.jsonl:2: not valid JSON"):
        read_benchmark(path)
    with pytest.raises(BenchmarkFormatError, match=r"nowhere\.jsonl:0: cannot open"):
        read_benchmark(tmp_path / "nowhere.jsonl")
    assert read_benchmark(write_lines(path, [json_line(DOCUMENT)]))[0].mentions[0].entity_id == "Paris"
