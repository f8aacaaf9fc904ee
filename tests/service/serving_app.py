"""A server process for the shutdown tests: the tiny index, served with a deliberately slow encoder.

Run as ``python -m tests.service.serving_app INDEX_DIR PORT WORKERS`` from the repo root. A query
containing "slow" makes the encoder touch a file in ``$SLEUTH_TEST_MARKERS`` (so the test knows the
request is in flight) and then sleep ``$SLEUTH_TEST_DELAY`` seconds.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.serving.loading import Services
from tests.conftest import TINY_KEYWORDS, FakeEncoder


class SlowEncoder(FakeEncoder):
    def __init__(self, keywords: list[str], markers: Path, delay: float) -> None:
        super().__init__(keywords)
        self.markers = markers
        self.delay = delay

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        if any("slow" in text for text in texts):
            (self.markers / f"in-flight-{os.getpid()}").touch()
            time.sleep(self.delay)
        return super().encode(texts, batch_size=batch_size, show_progress=show_progress)


def load(config: ServerConfig) -> Services:
    assert config.index is not None
    encoder = SlowEncoder(
        TINY_KEYWORDS, Path(os.environ["SLEUTH_TEST_MARKERS"]), float(os.environ.get("SLEUTH_TEST_DELAY", "5"))
    )
    return Services(searcher=Searcher(SearchIndex.load(config.index), encoder))


def main(argv: list[str]) -> int:
    from service.serving.workers import run
    from tests.service.serving_app import load as importable_load  # picklable by name for spawned workers

    index, port, workers = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    config = ServerConfig(
        host="127.0.0.1",
        port=int(port),
        index=Path(index),
        workers=int(workers),
        threads=2,
        grace_seconds=30.0,
        batch_max_wait_ms=0.0,
        torch_threads=1,
    )
    return run(config, load=importable_load)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
