"""Corpus embedding on Ray Data: the matrix of a single-process encoder, in corpus order, through the cache."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.corpus import load_corpus
from retrieval.dense import EmbeddingCache, cache_key, embed_documents, texts_checksum
from service.cluster.embedding import EncoderSpec, RayEmbedConfig, block_count, embed_corpus
from tests.conftest import RETRIEVAL_DATA, TINY_KEYWORDS, FakeEncoder

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def keyword_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 documents (the tiny corpus's texts recombined), enough for several blocks and batches."""
    words = ["cat", "kitten", "feline", "dog", "canine", "wolf", "bird", "fish", "pet", "house", "water"]
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("keywords") / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(120):
            text = " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
            handle.write(json.dumps({"_id": f"d{i:03d}", "title": f"t{i % 7}", "text": text}) + "\n")
    return path


def test_ray_matrix_equals_single_process_in_corpus_order(ray_cluster, keyword_corpus: Path, tmp_path: Path) -> None:
    documents = load_corpus(keyword_corpus)
    local = FakeEncoder(TINY_KEYWORDS)
    expected = local.encode([d.contents for d in documents])
    # Small blocks and batches so that rows cross many blocks and both actors.
    config = RayEmbedConfig(actors=2, cpus_per_actor=0.5, batch_rows=16, block_rows=10)
    cache = EmbeddingCache(tmp_path / "cache")
    factory = functools.partial(FakeEncoder, TINY_KEYWORDS)

    result = embed_corpus(keyword_corpus, factory, config=config, cache=cache, encoder_key=cache_key(local))

    assert result.doc_ids == tuple(d.doc_id for d in documents)
    assert not result.from_cache
    np.testing.assert_array_equal(result.matrix, expected)
    # The cache now holds the matrix under the single-process key: a local build reads it back.
    local_calls = FakeEncoder(TINY_KEYWORDS)
    reread = embed_documents(local_calls, [d.contents for d in documents], cache=cache, batch_size=16)
    np.testing.assert_array_equal(reread, expected)
    assert local_calls.calls == []
    # Without encoder_key the factory is run once on the driver to learn the key: same cache entry.
    again = embed_corpus(keyword_corpus, factory, config=config, cache=cache)
    assert again.from_cache
    np.testing.assert_array_equal(again.matrix, expected)


def test_cache_hit_skips_the_cluster(ray_cluster, keyword_corpus: Path, tmp_path: Path) -> None:
    documents = load_corpus(keyword_corpus)
    cache = EmbeddingCache(tmp_path / "cache")
    sentinel = np.full((len(documents), 4), 0.5, dtype=np.float32)
    local = FakeEncoder(TINY_KEYWORDS)
    texts = [d.contents for d in documents]
    cache.put(f"{cache_key(local)}-b{RayEmbedConfig().batch_rows}", texts_checksum(texts), sentinel)
    # A factory that would fail in an actor proves no actor ran.
    result = embed_corpus(keyword_corpus, _failing_factory, cache=cache, encoder_key=cache_key(local))
    assert result.from_cache
    np.testing.assert_array_equal(result.matrix, sentinel)


def _failing_factory() -> FakeEncoder:
    raise AssertionError("the encoder must not be loaded on a cache hit")


@pytest.mark.integration
def test_onnx_actors_match_the_local_onnx_encoder(ray_cluster, tmp_path: Path) -> None:
    from retrieval.onnx_encoder import OnnxEncoder

    lines = (RETRIEVAL_DATA / "scifact" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:50]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    graphs = tmp_path / "onnx"
    local = OnnxEncoder.load(cache_dir=graphs)  # exports the graph once; the actors load it from there
    expected = local.encode([d.contents for d in load_corpus(corpus)])

    spec = EncoderSpec(runtime="onnx", onnx_cache_dir=str(graphs))
    result = embed_corpus(corpus, spec, config=RayEmbedConfig(actors=1, cpus_per_actor=0.5, batch_rows=20))

    assert result.matrix.shape == expected.shape == (50, 384)
    # Runs group texts by length, so padding differs from the local call: equal within float rounding.
    np.testing.assert_allclose(result.matrix, expected, atol=2e-5)


@pytest.mark.parametrize(
    ("rows", "actors", "block_rows", "blocks"),
    [(1000, 2, 1024, 2), (1000, 4, 1024, 4), (3, 4, 1024, 3), (5000, 2, 1024, 5), (2048, 1, 1024, 2)],
)
def test_every_actor_gets_a_block_and_no_block_exceeds_block_rows(
    rows: int, actors: int, block_rows: int, blocks: int
) -> None:
    """A 1,000-document corpus used to be one block, which one of the two actors took whole."""
    assert block_count(rows, RayEmbedConfig(actors=actors, block_rows=block_rows)) == blocks
