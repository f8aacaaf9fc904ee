from __future__ import annotations

import pytest

from retrieval.corpus import load_corpus, load_qrels, load_queries
from retrieval.errors import DataFormatError


def test_reads_beir_directory_and_files(tmp_path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "title": "T", "text": "body"}\n\n{"_id": 2, "text": "x"}\n')
    docs = load_corpus(tmp_path)
    assert [(d.doc_id, d.title, d.text) for d in docs] == [("1", "T", "body"), ("2", "", "x")]
    assert docs[0].contents == "T\nbody"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n', r"corpus\.jsonl:2: duplicate document id '1'"),
        ('{"_id": "1", "text": "a"}\nnot json\n', r"corpus\.jsonl:2: not valid JSON"),
        ('{"title": "no id", "text": "a"}\n', r"corpus\.jsonl:1: field '_id' must be a non-empty string"),
        ("", r"corpus is empty"),
    ],
)
def test_bad_corpus_rows_are_reported_with_file_and_line(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message):
        load_corpus(path)


def test_qrels_beir_and_trec_formats(tmp_path) -> None:
    beir = tmp_path / "beir.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")
    trec = tmp_path / "trec.txt"
    trec.write_text("q1 0 d1 1\nq1 0 d2 0\nq2 0 d3 2\n")
    assert load_qrels(beir) == load_qrels(trec) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\t1\nq2\td2\tvery\n")
    with pytest.raises(DataFormatError, match=r"bad\.tsv:2: relevance 'very' is not an integer"):
        load_qrels(bad)


def test_queries_need_ids_and_text(tmp_path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": ""}\n')
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:2: field 'text'"):
        load_queries(path)
