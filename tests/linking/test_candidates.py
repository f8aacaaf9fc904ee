from __future__ import annotations

from linking import CandidateConfig, CandidateGenerator, EntityIndex, KnowledgeBase


def test_alias_candidates_come_first_in_prior_order(tiny_kb: KnowledgeBase) -> None:
    candidates = CandidateGenerator(tiny_kb).generate("Michael Jordan")
    assert [c.entity_id for c in candidates[:3]] == ["Michael Jordan", "Michael B. Jordan", "Michael I. Jordan"]
    assert [c.alias_rank for c in candidates[:3]] == [1, 2, 3]
    assert candidates[0].sources[0] == "alias"


def test_name_variants_add_candidates_beyond_the_alias_list(tiny_kb: KnowledgeBase) -> None:
    candidates = CandidateGenerator(tiny_kb).generate("Washington")
    ids = [c.entity_id for c in candidates]
    assert ids[0] == "Washington, D.C."
    player = candidates[ids.index("MaliVai Washington")]  # by surname: the alias table lacks him
    assert player.alias_rank is None and player.sources == ("variant",)


def test_fuzzy_fallback_only_when_names_find_nothing(tiny_kb: KnowledgeBase) -> None:
    candidates = CandidateGenerator(tiny_kb).generate("Sadam Husein")
    assert candidates[0].entity_id == "Saddam Hussein"
    assert candidates[0].sources == ("fuzzy",) and candidates[0].fuzzy_score is not None


def test_dense_retrieval_uses_the_context_vector(tiny_kb: KnowledgeBase, linking_encoder) -> None:
    index = EntityIndex.build(tiny_kb, linking_encoder, cache=None)
    generator = CandidateGenerator(tiny_kb, index, CandidateConfig(dense_k=1))
    vector = linking_encoder.encode(["a professor of machine learning"])[0]
    candidates = generator.generate("Prof. Mike", vector)
    assert [c.entity_id for c in candidates] == ["Michael I. Jordan"]
    assert candidates[0].sources == ("dense",) and candidates[0].dense_score > 0.5


def test_candidates_are_deduplicated_and_capped(tiny_kb: KnowledgeBase) -> None:
    candidates = CandidateGenerator(tiny_kb, config=CandidateConfig(k=2, dense_k=0)).generate("Hussein")
    assert len(candidates) == 2
    assert len({c.entity_id for c in candidates}) == 2
    merged = CandidateGenerator(tiny_kb).generate("Hussein")
    saddam = next(c for c in merged if c.entity_id == "Saddam Hussein")
    assert saddam.sources == ("alias", "variant")


def test_batch_dense_retrieval_matches_one_by_one_with_shared_sentence_vectors(
    tiny_kb: KnowledgeBase, linking_encoder
) -> None:
    # Mentions of one sentence share its vector; the batch searches each distinct vector once and
    # must hand every mention the same hits as a search of its own.
    import numpy as np

    index = EntityIndex.build(tiny_kb, linking_encoder, cache=None)
    generator = CandidateGenerator(tiny_kb, index, CandidateConfig(dense_k=2))
    sentences = linking_encoder.encode(["a professor of machine learning", "the basketball player of the bulls"])
    vectors = sentences[[0, 1, 0, 1, 1]]
    surfaces = ["Prof. Mike", "MJ", "Mike", "the player", "Jordan"]
    batch = generator.generate_batch(surfaces, vectors)
    single = [generator.generate(s, v) for s, v in zip(surfaces, vectors, strict=True)]
    assert [[c.entity_id for c in cands] for cands in batch] == [[c.entity_id for c in cands] for cands in single]
    assert batch[0][0].entity_id == "Michael I. Jordan" and batch[1][0].entity_id == "Michael Jordan"
    assert np.isclose(batch[0][0].dense_score, single[0][0].dense_score)
