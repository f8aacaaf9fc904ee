"""A small in-memory shard for the Ray layer's tests: keyword-overlap "BM25" and FakeEncoder vectors.

Module-level (not inside a test) so that Serve replicas can import it by name.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from service.cluster.front import ShardAnswer, ShardBackend, answer
from tests.conftest import TINY_DOCS, TINY_KEYWORDS, FakeEncoder


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


class KeywordShard:
    """Documents in memory; ``bm25_top`` scores by the number of query words a document shares.

    ``delay_s`` makes every lookup take that long, so that a fault test finds calls in flight.
    """

    def __init__(self, docs: dict[str, str], *, delay_s: float = 0.0) -> None:
        self.docs = dict(docs)
        self.delay_s = delay_s
        self._words = {doc_id: _words(text) for doc_id, text in self.docs.items()}
        encoder = FakeEncoder(TINY_KEYWORDS)
        self._ids = list(self.docs)
        self._matrix = encoder.encode([self.docs[d] for d in self._ids]) if self._ids else np.zeros((0, 1))

    @classmethod
    def load(cls, directory: str | Path) -> KeywordShard:
        lines = (Path(directory) / "docs.jsonl").read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        settings = Path(directory) / "shard.json"
        delay_s = json.loads(settings.read_text(encoding="utf-8"))["delay_s"] if settings.is_file() else 0.0
        return cls({row["_id"]: f"{row['title']}\n{row['text']}" for row in rows}, delay_s=delay_s)

    def bm25_top(self, query: str, k: int) -> list[tuple[str, float]]:
        time.sleep(self.delay_s)
        terms = _words(query)
        scored = [(doc_id, float(len(terms & words))) for doc_id, words in self._words.items()]
        scored = [hit for hit in scored if hit[1] > 0]
        return sorted(scored, key=lambda h: (-h[1], h[0]))[:k]

    def dense_top(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        scores = self._matrix @ np.asarray(vector, dtype=np.float32)
        order = sorted(range(len(self._ids)), key=lambda i: (-float(scores[i]), self._ids[i]))[:k]
        return [(self._ids[i], float(scores[i])) for i in order]


def write_shards(root: Path, parts: dict[str, list[str]], *, suffix: str = "", delay_s: float = 0.0) -> dict[str, Path]:
    """Write the tiny corpus split into shard directories (``parts``: shard name -> doc ids)."""
    by_id = {doc["_id"]: doc for doc in TINY_DOCS}
    dirs = {}
    for name, ids in parts.items():
        directory = root / name
        directory.mkdir(parents=True, exist_ok=True)
        rows = [dict(by_id[i], title=by_id[i]["title"] + suffix) | {"_id": i + suffix} for i in ids]
        (directory / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        if delay_s:
            (directory / "shard.json").write_text(json.dumps({"delay_s": delay_s}), encoding="utf-8")
        dirs[name] = directory
    return dirs


class LocalShardClient:
    """An in-process :class:`~service.cluster.front.ShardClient` over a shard backend."""

    def __init__(self, name: str, shard: ShardBackend) -> None:
        self.name = name
        self.shard = shard

    async def top(self, query: str | None, vector: np.ndarray | None, k: int) -> ShardAnswer:
        return answer(self.shard, query, vector, k)
