"""A Ray Data encoder actor that dies mid-build: Ray restarts it and the build's matrix is still whole and right."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from service.cluster.embedding import RayEmbedConfig, embed_texts
from tests.conftest import TINY_KEYWORDS, FakeEncoder

pytestmark = pytest.mark.ray


class DiesOnce(FakeEncoder):
    """The fake keyword encoder, except that the first actor to encode a batch kills its own process.

    The marker file makes the death happen once across all actors and restarts (they share the
    filesystem with the test); ``os._exit`` is a crash, not an exception Ray could report.
    """

    def __init__(self, keywords: list[str], marker: str) -> None:
        super().__init__(keywords)
        self.marker = Path(marker)

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        try:
            with open(self.marker, "x", encoding="utf-8") as handle:  # only the first caller gets here
                handle.write(str(os.getpid()))
        except FileExistsError:
            return super().encode(texts, batch_size=batch_size)
        os._exit(1)


def test_a_killed_encoder_actor_is_restarted_and_no_row_is_lost(ray_cluster, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    words = ["cat", "kitten", "dog", "wolf", "bird", "fish", "house", "water"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 9)))) for _ in range(90)]
    marker = tmp_path / "died"
    factory = functools.partial(DiesOnce, TINY_KEYWORDS, str(marker))
    config = RayEmbedConfig(actors=2, cpus_per_actor=0.5, batch_rows=10, block_rows=10)

    matrix = embed_texts(texts, factory, config=config)

    assert marker.exists()  # an actor did die
    died_pid = int(marker.read_text())
    assert died_pid != os.getpid()
    np.testing.assert_array_equal(matrix, FakeEncoder(TINY_KEYWORDS).encode(texts))
