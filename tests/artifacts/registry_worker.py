"""A separate process that builds into a registry, for the crash and reproducibility tests.

    python tests/artifacts/registry_worker.py build REGISTRY CORPUS K1   # publish once, print the version
    python tests/artifacts/registry_worker.py churn REGISTRY CORPUS SEED # publish/activate/gc until killed

``churn`` prints ``ready`` once its imports are done, so the test's kill lands in the build loop.
"""

from __future__ import annotations

import contextlib
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from artifacts.errors import NoPreviousVersionError  # noqa: E402
from artifacts.registry import Registry  # noqa: E402
from retrieval.bm25 import BM25Config  # noqa: E402
from retrieval.index import SearchIndex  # noqa: E402
from tests.conftest import TINY_KEYWORDS, FakeEncoder  # noqa: E402


def build(registry: Registry, corpus: Path, k1: float) -> str:
    encoder = FakeEncoder(TINY_KEYWORDS)
    published = registry.publish(
        "search-index", lambda out: SearchIndex.build(corpus, out, encoder, bm25_config=BM25Config(k1=k1))
    )
    return published.info.version


def churn(registry: Registry, corpus: Path, seed: int) -> None:
    rng = random.Random(seed)
    print("ready", flush=True)
    while True:
        version = build(registry, corpus, round(rng.uniform(0.5, 2.0), 4))
        registry.activate(version)
        if rng.random() < 0.3:
            registry.gc(keep=3)
        if rng.random() < 0.2:
            with contextlib.suppress(NoPreviousVersionError):
                registry.rollback("search-index")


def main() -> int:
    command, registry_dir, corpus, value = sys.argv[1:5]
    registry = Registry.open(registry_dir)
    if command == "build":
        print(build(registry, Path(corpus), float(value)))
    else:
        churn(registry, Path(corpus), int(value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
