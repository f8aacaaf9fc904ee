from __future__ import annotations

import json
from pathlib import Path

import pytest

from linking import BenchmarkFormatError, Candidate, GoldMention, Link, LinkingDocument, Mention, read_benchmark
from linking.evaluation import EvaluationResult, PRFCounts, score_document

DOC = LinkingDocument(
    "d1",
    "Paris met Hussein in Paris. Nobody came.",
    (
        GoldMention(0, 5, "Paris", "Paris Saint-Germain"),
        GoldMention(10, 17, "Hussein", "Saddam Hussein"),
        GoldMention(21, 26, "Paris", "Paris"),
        GoldMention(28, 34, "Nobody", None),
    ),
)


def link(start: int, end: int, entity: str | None, *candidates: str) -> Link:
    return Link(Mention(start, end, DOC.text[start:end]), entity, 0.5, tuple(Candidate(c) for c in candidates))


def test_prf_counts_add_up_to_micro_scores() -> None:
    total = PRFCounts(tp=3, fp=1, fn=2)
    total += PRFCounts(tp=1, fp=1, fn=0)
    assert (total.tp, total.fp, total.fn) == (4, 2, 2)
    assert total.precision == pytest.approx(4 / 6)
    assert total.recall == pytest.approx(4 / 6)
    assert total.f1 == pytest.approx(4 / 6)
    assert PRFCounts().f1 == 0.0


def test_ed_scoring_counts_nil_predictions_only_against_recall_and_entities_on_nil_gold_as_fp() -> None:
    result = EvaluationResult("ed")
    links = [
        link(0, 5, "Paris", "Paris", "Paris Saint-Germain"),  # wrong: fp and fn
        link(10, 17, "Saddam Hussein", "Hussein of Jordan", "Saddam Hussein"),  # right
        link(21, 26, None, "Paris"),  # NIL: fn only
        link(28, 34, "Paris"),  # gold NIL, an entity predicted: fp (a predicted non-NIL that is not correct)
    ]
    score_document(DOC, links, "ed", result)
    assert (result.counts.tp, result.counts.fp, result.counts.fn) == (1, 2, 2)
    assert result.counts.precision == pytest.approx(1 / 3)
    assert result.counts.recall == pytest.approx(1 / 3)
    assert result.candidate_recall() == {1: 1 / 3, 10: 1.0, 30: 1.0}
    assert [e.surface for e in result.errors] == ["Paris", "Paris", "Nobody"]
    nil_on_nil = EvaluationResult("ed")
    score_document(DOC, [*links[:3], link(28, 34, None)], "ed", nil_on_nil)
    assert (nil_on_nil.counts.tp, nil_on_nil.counts.fp, nil_on_nil.counts.fn) == (1, 1, 2)


def test_e2e_scoring_needs_exact_spans() -> None:
    result = EvaluationResult("e2e")
    links = [
        link(0, 5, "Paris Saint-Germain"),  # right
        link(10, 16, "Saddam Hussein"),  # wrong span: fp, and the gold is missed
        link(35, 39, "Paris"),  # spurious: fp
    ]
    score_document(DOC, links, "e2e", result)
    assert (result.counts.tp, result.counts.fp, result.counts.fn) == (1, 2, 2)
    data = result.to_dict()
    assert set(data) >= {"precision", "recall", "f1", "candidate_recall", "mentions"}


def test_read_benchmark_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "bench.jsonl"
    good = {"id": "a", "text": "Paris", "mentions": [{"start": 0, "end": 5, "surface": "Paris", "entity": "Paris"}]}
    bad = {"id": "b", "text": "Hi", "mentions": [{"start": 0, "end": 9, "entity": None}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(BenchmarkFormatError) as info:
        read_benchmark(path)
    assert info.value.line == 2
    path.write_text(json.dumps(good) + "\n")
    assert read_benchmark(path)[0].mentions[0].entity_id == "Paris"
