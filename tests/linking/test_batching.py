"""The faster paths give the results of the plain ones: batched detection, the fuzzy-key length filter and cache."""

from __future__ import annotations

import pickle
from pathlib import Path

from rapidfuzz import fuzz, process

from linking import EntityLinker, KnowledgeBase, LinkOptions, MentionDetector, read_benchmark
from linking.evaluation import evaluate_linker
from linking.normalization import normalize_alias
from tests.linking.conftest import doc

TEXTS = [
    "Michael Jordan won six NBA titles with the Bulls. Jordan retired in 2003.",
    "Paris Saint-Germain won a rugby league match in Paris, France, said The Washington Post.",
    "nothing to link here",
    "Saddam Hussein was president of Iraq; Hussein met the United Nations envoy.",
]


def test_link_batch_gives_what_link_gives_text_by_text(tiny_kb: KnowledgeBase, linking_encoder, nlp) -> None:
    linker = EntityLinker(tiny_kb, linking_encoder, detector=MentionDetector(nlp))
    options = LinkOptions(top_candidates=3)
    one_by_one = [linker.link(text, options=options) for text in TEXTS]
    assert linker.link_batch(TEXTS, options=options) == one_by_one
    assert sum(len(links) for links in one_by_one) >= 6
    given = [None, linker.detect(TEXTS[1])[:1], None, None]
    mixed = linker.link_batch(TEXTS, given, options)
    assert mixed[0] == one_by_one[0] and mixed[1] == linker.link(TEXTS[1], given[1], options)
    assert len(mixed[1]) == 1


def test_end_to_end_evaluation_detects_as_one_stream_with_the_same_counts(
    tiny_kb: KnowledgeBase, linking_encoder, nlp
) -> None:
    linker = EntityLinker(tiny_kb, linking_encoder, detector=MentionDetector(nlp))
    documents = [
        doc("d1", TEXTS[0], ("Michael Jordan", "Michael Jordan"), ("Bulls", None)),
        doc("d2", TEXTS[1], ("Paris Saint-Germain", "Paris Saint-Germain"), ("Paris", "Paris")),
        doc("d3", TEXTS[3], ("Saddam Hussein", "Saddam Hussein"), ("United Nations", "United Nations")),
    ]
    calls = []
    original = linker.detector.detect_batch

    def counting(texts):
        calls.append(len(texts))
        return original(texts)

    linker.detector.detect_batch = counting  # type: ignore[method-assign]
    result = evaluate_linker(linker, documents, "e2e")
    assert calls == [3]  # one stream, not a call per document
    expected_tp = 0
    for document in documents:
        gold = {(g.start, g.end): g.entity_id for g in document.mentions}
        links = linker.link(document.text, options=LinkOptions(top_candidates=30))
        expected_tp += sum(gold.get((k.mention.start, k.mention.end)) == k.entity_id is not None for k in links)
    assert result.counts.tp == expected_tp > 0


def test_the_fuzzy_length_filter_finds_what_a_scan_of_every_key_finds(linking_data: Path) -> None:
    kb = KnowledgeBase.from_files([linking_data / "kb" / "entities.jsonl"], [linking_data / "kb" / "aliases.tsv"])
    surfaces = sorted(
        {g.surface for d in read_benchmark(linking_data / "benchmarks" / "oke2015.jsonl") for g in d.mentions}
    )
    found = 0
    for cutoff in (85.0, 70.0):
        for surface in surfaces:
            key = normalize_alias(surface)
            if len(key) < 4:
                continue
            scan = process.extract(key, kb._fuzzy_keys, scorer=fuzz.ratio, limit=3, score_cutoff=cutoff)
            expected = [(match, float(score)) for match, score, _ in scan if match != key]
            assert kb.fuzzy_keys(surface, cutoff=cutoff) == expected, surface
            found += bool(expected)
    assert found > 50


def test_fuzzy_matches_are_remembered_per_kb_and_a_kb_still_pickles(tiny_kb: KnowledgeBase) -> None:
    first = tiny_kb.fuzzy_keys("Sadam Husein")
    assert first, "the tiny KB has a close key for this misspelling"
    first.clear()  # callers get their own list: changing it leaves the remembered matches alone
    again = tiny_kb.fuzzy_keys("Sadam Husein")
    assert again and tiny_kb._fuzzy_scan.cache_info().hits >= 1
    copy = pickle.loads(pickle.dumps(tiny_kb))
    assert copy.fuzzy_keys("Sadam Husein") == again
    assert copy._fuzzy_scan.cache_info().currsize == 1  # a fresh cache, not the original's
