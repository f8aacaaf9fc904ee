"""Entity vectors and their cache: a cache entry holds exactly what this code would compute.

A disambiguator trained on features of entity vectors depends on their last bits, so the cache
key must change whenever anything that shapes those bits changes: the embedded texts, the
weights, the precision, the libraries, the batching.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import linking.entity_index as entity_index_module
import retrieval.dense as dense
from linking import EntityIndex, KnowledgeBase
from retrieval.dense import EmbeddingCache, embed_documents, texts_checksum, vector_cache_key
from tests.linking.conftest import BatchSensitiveEncoder


def test_a_warm_cache_gives_the_cold_vectors_and_another_batching_is_another_entry(
    tiny_kb: KnowledgeBase, tmp_path: Path
) -> None:
    encoder = BatchSensitiveEncoder()
    cache = EmbeddingCache(tmp_path)
    cold = EntityIndex.build(tiny_kb, encoder, cache=cache)
    calls = len(encoder.calls)
    warm = EntityIndex.build(tiny_kb, encoder, cache=cache)
    assert len(encoder.calls) == calls  # read, not encoded again
    np.testing.assert_array_equal(warm.vectors, cold.vectors)
    texts = [entity_index_module.entity_text(e.name, e.description) for e in tiny_kb.entities()]
    other = embed_documents(encoder, texts, cache=cache, batch_size=4)
    assert len(list(tmp_path.glob("*.npy"))) == 2  # batch size 4 is its own entry...
    assert not np.array_equal(other, cold.vectors)  # ...because its bits differ


def test_changing_the_embedded_text_recipe_changes_the_cache_entry(
    tiny_kb: KnowledgeBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = BatchSensitiveEncoder()
    cache = EmbeddingCache(tmp_path)
    before = EntityIndex.build(tiny_kb, encoder, cache=cache)
    monkeypatch.setattr(entity_index_module, "entity_text", lambda name, description: f"{name} (entity). {description}")
    after = EntityIndex.build(tiny_kb, encoder, cache=cache)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    assert not np.array_equal(after.vectors, before.vectors)


def test_the_key_covers_precision_libraries_and_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    base = vector_cache_key("w", "float32", "torch=2.5.1")
    assert vector_cache_key("w", "int8", "torch=2.5.1") != base
    assert vector_cache_key("w", "float32", "torch=2.6.0") != base
    assert vector_cache_key("v", "float32", "torch=2.5.1") != base
    monkeypatch.setattr(dense, "EMBEDDING_RECIPE", dense.EMBEDDING_RECIPE + 1)
    assert vector_cache_key("w", "float32", "torch=2.5.1") != base
    monkeypatch.undo()
    monkeypatch.setattr(dense, "ENCODE_CHUNK", 7)
    assert vector_cache_key("w", "float32", "torch=2.5.1") != base


def test_texts_checksum_is_of_the_exact_texts_in_order() -> None:
    assert texts_checksum(["a", "b"]) != texts_checksum(["b", "a"])
    assert texts_checksum(["ab", "c"]) != texts_checksum(["a", "bc"])
    assert texts_checksum(["a\n\0b"]) != texts_checksum(["a", "b"])


def test_encoding_logs_progress_in_chunks(
    tiny_kb: KnowledgeBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dense, "ENCODE_CHUNK", 5)
    encoder = BatchSensitiveEncoder()
    with caplog.at_level(logging.INFO, logger="retrieval.dense"):
        EntityIndex.build(tiny_kb, encoder, cache=EmbeddingCache(tmp_path))
    n = len(tiny_kb)
    assert encoder.calls == [5] * (n // 5) + ([n % 5] if n % 5 else [])
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("encoding entities")]
    assert progress[0].startswith(f"encoding entities 5/{n} ") and progress[-1].startswith(
        f"encoding entities {n}/{n} "
    )
