"""Encoder constructors wire loaded parts together; loading is the classmethods' and load_encoder's job."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.dense import Encoder, TorchEncoder
from retrieval.onnx_encoder import load_encoder


class RecordingModel:
    """Stands in for a loaded SentenceTransformer: unit vectors, and a record of the batches asked for."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def get_embedding_dimension(self) -> int:
        return 3

    def encode(self, texts: list[str], **options: object) -> np.ndarray:
        assert options["normalize_embeddings"] is True
        self.batches.append(list(texts))
        return np.tile(np.array([0.6, 0.8, 0.0], dtype=np.float64), (len(texts), 1))


def test_torch_encoder_wraps_a_loaded_model() -> None:
    model = RecordingModel()
    encoder = TorchEncoder(model, name="tiny", checksum="abc123")
    assert isinstance(encoder, Encoder)
    assert (encoder.name, encoder.dimension, encoder.runtime) == ("tiny", 3, "torch")
    # no location to load the float32 graph from: its own vectors, under a key of their own
    assert encoder.cache_key.startswith("abc123-torch-float32-") and encoder.document_encoder() is encoder
    assert model.batches == []  # nothing encoded (or read) on construction
    vectors = encoder.encode(["a", "b"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 3) and vectors.flags["C_CONTIGUOUS"]
    assert encoder.encode([]).shape == (0, 3) and model.batches == [["a", "b"]]


def test_load_encoder_refuses_an_unknown_runtime() -> None:
    with pytest.raises(ValueError, match="unknown encoder runtime 'tensorrt'"):
        load_encoder(runtime="tensorrt")


def test_a_distributed_embedder_fills_the_cache_entry_a_local_build_reads(tmp_path) -> None:
    from retrieval.dense import EmbeddingCache, embed_documents
    from tests.conftest import TINY_KEYWORDS, FakeEncoder

    texts = ["a cat and a kitten", "a dog", "birds"]
    cache = EmbeddingCache(tmp_path)
    elsewhere: list[list[str]] = []

    def compute(batch: list[str]) -> np.ndarray:
        elsewhere.append(batch)
        return FakeEncoder(TINY_KEYWORDS).encode(batch)

    encoder = FakeEncoder(TINY_KEYWORDS)
    matrix = embed_documents(encoder, texts, cache=cache, compute=compute)
    assert elsewhere == [texts] and encoder.calls == []  # computed elsewhere, not by the local encoder
    again = embed_documents(encoder, texts, cache=cache)  # the local build finds the same entry
    np.testing.assert_array_equal(again, matrix)
    assert encoder.calls == []


def test_a_distributed_embedder_with_the_wrong_shape_is_refused(tmp_path) -> None:
    from retrieval.dense import EmbeddingCache, embed_documents
    from tests.conftest import TINY_KEYWORDS, FakeEncoder

    encoder = FakeEncoder(TINY_KEYWORDS)
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match=r"returned a \(1, 7\) matrix for 2 texts"):
        embed_documents(encoder, ["a", "b"], cache=cache, compute=lambda texts: np.zeros((1, 7), dtype=np.float32))
    assert list(tmp_path.glob("*.npy")) == []  # nothing cached
