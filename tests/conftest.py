"""Shared fixtures: a deterministic fake encoder, tiny corpora, the real encoder and the shared data."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RETRIEVAL_DATA = SHARED_DATA / "retrieval"
LINKING_DATA = SHARED_DATA / "linking"


class FakeEncoder:
    """Encodes a text as the normalized counts of a fixed keyword list (plus a bias dimension).

    Deterministic and instant: tests of fusion and the pipeline get exact, explainable dense
    scores without a model (the sentence-transformers trick for IR evaluator tests).
    """

    def __init__(self, keywords: list[str]) -> None:
        self.keywords = keywords
        self.name = "fake-keywords"
        self.checksum = hashlib.sha256("\n".join(keywords).encode()).hexdigest()[:16]
        self.dimension = len(keywords) + 1
        self.calls: list[int] = []

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        self.calls.append(len(texts))
        matrix = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            for col, keyword in enumerate(self.keywords):
                matrix[row, col] = sum(w.startswith(keyword) for w in words)
            matrix[row, -1] = 0.1
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


TINY_DOCS = [
    {"_id": "cats", "title": "Cats", "text": "Cats are small felines; a cat purrs and hunts mice."},
    {"_id": "dogs", "title": "Dogs", "text": "Dogs are loyal canines. A dog barks, fetches and guards the house."},
    {"_id": "kitten", "title": "Kitten care", "text": "A kitten is a young cat. Feed kittens often."},
    {"_id": "birds", "title": "Birds", "text": "Birds have feathers and most birds can fly; parrots talk."},
    {"_id": "wolves", "title": "Wolves", "text": "Wolves are wild canines that hunt in packs."},
    {"_id": "fish", "title": "Aquarium fish", "text": "Goldfish live in water and need clean tanks."},
]
TINY_KEYWORDS = ["cat", "kitten", "feline", "dog", "canine", "wolf", "bird", "fish", "pet"]


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder(TINY_KEYWORDS)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in TINY_DOCS), encoding="utf-8")
    return path


@pytest.fixture
def tiny_index(tiny_corpus: Path, tmp_path: Path, fake_encoder: FakeEncoder):
    from retrieval.index import SearchIndex

    return SearchIndex.build(tiny_corpus, tmp_path / "index", fake_encoder)


@pytest.fixture(scope="session")
def real_encoder():
    from retrieval.dense import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


def _shared(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"shared evaluation data missing at {path}: the repo must sit beside ../shared")
    return path


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return _shared(RETRIEVAL_DATA / "scifact")


@pytest.fixture(scope="session")
def cisi_dir() -> Path:
    return _shared(RETRIEVAL_DATA / "cisi")


@pytest.fixture(scope="session")
def scifact_index(scifact_dir: Path, real_encoder, tmp_path_factory):
    """SciFact indexed with the real encoder; embeddings come from the cache after the first run."""
    from retrieval.dense import EmbeddingCache
    from retrieval.index import SearchIndex

    return SearchIndex.build(
        scifact_dir, tmp_path_factory.mktemp("scifact") / "index", real_encoder, cache=EmbeddingCache()
    )


@pytest.fixture(scope="session")
def cisi_index(cisi_dir: Path, real_encoder, tmp_path_factory):
    from retrieval.dense import EmbeddingCache
    from retrieval.index import SearchIndex

    return SearchIndex.build(cisi_dir, tmp_path_factory.mktemp("cisi") / "index", real_encoder, cache=EmbeddingCache())
