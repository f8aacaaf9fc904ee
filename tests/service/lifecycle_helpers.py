"""Registry fixtures for the lifecycle tests: versions whose every document is tagged with its version."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np

from artifacts.registry import Registry, VersionInfo
from retrieval.index import SearchIndex
from tests.conftest import TINY_DOCS, TINY_KEYWORDS, FakeEncoder


class SlowEncoder(FakeEncoder):
    """The fake encoder, a few milliseconds slower: keeps requests in flight across a swap."""

    def __init__(self, delay: float = 0.003) -> None:
        super().__init__(TINY_KEYWORDS)
        self.delay = delay

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        time.sleep(self.delay)
        return super().encode(texts, batch_size=batch_size, show_progress=show_progress)


def tagged_corpus(directory: Path, tag: str) -> Path:
    """The tiny corpus with ``[tag]`` in every title and ``-tag`` on every id: a version's fingerprint."""
    path = directory / f"corpus-{tag}.jsonl"
    rows = [{**d, "_id": f"{d['_id']}-{tag}", "title": f"{d['title']} [{tag}]"} for d in TINY_DOCS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def publish_tagged(registry: Registry, directory: Path, tag: str, encoder: FakeEncoder) -> VersionInfo:
    corpus = tagged_corpus(directory, tag)
    return registry.publish("search-index", lambda out: SearchIndex.build(corpus, out, encoder)).info


def tag_of(title: str) -> str:
    return title.rsplit("[", 1)[1].rstrip("]")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
