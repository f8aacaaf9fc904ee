"""What a new user's input mistakes produce: errors naming file and line, warnings, and empty documents.

Every file here is written to ``tmp_path``: bad bytes, bad JSON, missing fields, empty documents.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from retrieval.corpus import iter_corpus, load_corpus, load_qrels, load_queries
from retrieval.errors import DataFormatError
from retrieval.evaluation import evaluate_run, read_trec_run
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher, SearchRequest
from tests.conftest import TINY_DOCS, FakeEncoder

BAD_BYTES = b"\xff\xfe"


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def json_line(row: dict) -> bytes:
    return json.dumps(row).encode()


def test_invalid_utf8_in_a_corpus_names_file_line_and_byte_offset(tmp_path: Path) -> None:
    good = [json_line(d) for d in TINY_DOCS[:2]]
    bad = b'{"_id": "x", "text": "caf' + BAD_BYTES + b'"}'
    write_lines(tmp_path / "corpus.jsonl", [*good, bad])
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:3: not valid UTF-8: byte 0xff at offset 25") as info:
        load_corpus(tmp_path)
    assert "UnicodeDecodeError" not in str(info.value)


def test_invalid_utf8_in_queries_and_qrels_names_file_and_line(tmp_path: Path) -> None:
    queries = write_lines(
        tmp_path / "queries.jsonl",
        [json_line({"_id": "1", "text": "cats"}), json_line({"_id": "2", "text": "dogs"}), BAD_BYTES],
    )
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:3: not valid UTF-8"):
        load_queries(queries)
    qrels = write_lines(
        tmp_path / "qrels.tsv", [b"query-id\tcorpus-id\tscore", b"1\tcats\t1", b"2\td" + BAD_BYTES + b"\t1"]
    )
    with pytest.raises(DataFormatError, match=r"qrels\.tsv:3: not valid UTF-8"):
        load_qrels(qrels)
    run = write_lines(
        tmp_path / "run.trec", [b"1 Q0 cats 1 2.0 x", b"1 Q0 dogs 2 1.0 x", b"2 Q0 " + BAD_BYTES + b" 1 1 x"]
    )
    with pytest.raises(DataFormatError, match=r"run\.trec:3: not valid UTF-8"):
        read_trec_run(run)


def test_windows_line_endings_and_a_byte_order_mark_are_read(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json_line(TINY_DOCS[0]) + b"\r\n" + json_line(TINY_DOCS[1]) + b"\r\n")
    assert [d.doc_id for d in load_corpus(path)] == ["cats", "dogs"]
    assert load_corpus(path)[1].text == TINY_DOCS[1]["text"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"_id": "x", "text": "unterminated', r"corpus\.jsonl:2: not valid JSON: Unterminated string"),
        (b'["x", "text"]', r"corpus\.jsonl:2: expected a JSON object"),
        (b'{"text": "no id"}', r"corpus\.jsonl:2: field '_id' must be a non-empty string, but it is missing"),
        (b'{"_id": "x", "text": 5}', r"corpus\.jsonl:2: field 'text' must be a string, but it is a number"),
        (b'{"_id": ["x"], "text": "a"}', r"corpus\.jsonl:2: field '_id' must be a non-empty string, but it is a list"),
    ],
)
def test_malformed_corpus_rows_name_file_line_and_field(tmp_path: Path, line: bytes, message: str) -> None:
    path = write_lines(tmp_path / "corpus.jsonl", [json_line(TINY_DOCS[0]), line])
    with pytest.raises(DataFormatError, match=message):
        load_corpus(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"nowhere\.jsonl: cannot open"):
        load_queries(tmp_path / "nowhere.jsonl")
    with pytest.raises(DataFormatError, match=r"nowhere\.tsv: cannot read qrels: cannot open"):
        load_qrels(tmp_path / "nowhere.tsv")


# -- qrels naming queries the run does not answer ---------------------------------------------------


def test_judged_queries_missing_from_the_run_are_reported_and_score_zero(tmp_path: Path) -> None:
    qrels = load_qrels(
        write_lines(
            tmp_path / "qrels.tsv",
            [b"query-id\tcorpus-id\tscore", b"q1\tcats\t1", b"q2\tdogs\t1", b"q3\tbirds\t1", b"q4\tfish\t0"],
        )
    )
    # q2 is answered with no hits (not missing); q3 is absent (missing); q4 has no relevant document.
    run = {"q1": {"cats": 2.0, "dogs": 1.0}, "q2": {}}
    report = evaluate_run(run, qrels, ["mrr@10", "recall@100"])
    assert report.missing_queries == ("q3",)
    assert report.queries == 3
    assert report.per_query["q3"] == {"mrr@10": 0.0, "recall@100": 0.0}
    assert report.means["mrr@10"] == pytest.approx(1 / 3)  # (1 + 0 + 0) / 3: trec_eval -c
    assert report.to_dict()["missing_queries"] == 1
    assert report.missing_warning() == "1 of 3 judged queries have no results in the run and score 0: q3"
    complete = evaluate_run({"q1": {"cats": 1.0}, "q2": {}, "q3": {}}, qrels, ["mrr@10"])
    assert complete.missing_queries == ()
    assert complete.missing_warning() is None
    assert complete.means["mrr@10"] == report.means["mrr@10"]


def test_the_missing_queries_warning_names_the_first_few() -> None:
    qrels = {f"q{i}": {"d": 1} for i in range(8)}
    report = evaluate_run({"q0": {"d": 1.0}}, qrels, ["mrr@10"])
    assert len(report.missing_queries) == 7
    assert report.missing_warning(shown=3) == (
        "7 of 8 judged queries have no results in the run and score 0: q1, q2, q3 and 4 more"
    )


# -- empty documents --------------------------------------------------------------------------------

EMPTY_DOCS = [
    {"_id": "blank", "title": "", "text": ""},
    {"_id": "spaces", "title": "  ", "text": "\n\t "},
]


@pytest.fixture
def corpus_with_empty_docs(tmp_path: Path) -> Path:
    rows = [*TINY_DOCS[:3], EMPTY_DOCS[0], *TINY_DOCS[3:], EMPTY_DOCS[1]]
    return write_lines(tmp_path / "corpus.jsonl", [json_line(row) for row in rows])


def test_empty_documents_are_read_and_counted_with_a_warning(
    corpus_with_empty_docs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="retrieval.corpus"):
        documents = load_corpus(corpus_with_empty_docs)
    assert len(documents) == len(TINY_DOCS) + 2
    assert [d.doc_id for d in documents if d.is_empty] == ["blank", "spaces"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 of 8 documents have neither title nor text" in warnings[0]
    assert "'blank' (line 4), 'spaces' (line 8)" in warnings[0]


def test_strict_mode_refuses_the_first_empty_document_by_file_and_line(corpus_with_empty_docs: Path) -> None:
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:4: document 'blank' has neither title nor text"):
        load_corpus(corpus_with_empty_docs, strict=True)
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:4: document 'blank'"):
        list(iter_corpus(corpus_with_empty_docs, strict=True))


def test_an_index_with_empty_documents_builds_and_never_returns_them(
    corpus_with_empty_docs: Path, tmp_path: Path, fake_encoder: FakeEncoder
) -> None:
    index = SearchIndex.build(corpus_with_empty_docs, tmp_path / "index", fake_encoder)
    assert len(index) == len(TINY_DOCS) + 2
    assert index.manifest.stats["empty_documents"] == 2
    assert index.empty_ids == {"blank", "spaces"}
    # BM25 has no term of theirs; their dense vectors are zero (the fake encoder would give "" a bias vector).
    assert np.all(index.bm25.scores("cat")[[index.position("blank"), index.position("spaces")]] == 0)
    assert not np.any(index.dense.vectors(np.array([index.position("blank"), index.position("spaces")])))
    searcher = Searcher(index, fake_encoder)
    for query in ("cat", "a kitten", "birds that fly", "zebra"):
        for mode in ("bm25", "dense", "hybrid"):
            hits = searcher.search(SearchRequest(query, top_k=20, mode=mode)).hits
            assert not {h.doc_id for h in hits} & index.empty_ids, (query, mode)
    # A real query still ranks its document first, and dense mode still fills its list from the rest.
    assert searcher.search(SearchRequest("kitten", top_k=3, mode="dense")).hits[0].doc_id == "kitten"
    assert len(searcher.search(SearchRequest("kitten", top_k=20, mode="dense")).hits) == len(TINY_DOCS)
    reloaded = SearchIndex.load(tmp_path / "index")
    assert reloaded.empty_ids == index.empty_ids


def test_strict_build_publishes_nothing(
    corpus_with_empty_docs: Path, tmp_path: Path, fake_encoder: FakeEncoder
) -> None:
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:4"):
        SearchIndex.build(corpus_with_empty_docs, tmp_path / "index", fake_encoder, strict=True)
    assert not (tmp_path / "index").exists()
