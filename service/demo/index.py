"""The embedded demo: an index of the demo corpus shipped with the package.

The index is built on first use into the cache directory (never the repo), keyed by the corpus
checksum and the encoder weights, and reused afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path

from artifacts import ArtifactError, sha256_file
from retrieval.dense import EmbeddingCache, Encoder, cache_key, default_cache_dir
from retrieval.index import SearchIndex

logger = logging.getLogger(__name__)


def demo_dir() -> Path:
    """The directory holding the demo data files of the installed package (this package's)."""
    return Path(__file__).resolve().parent


def demo_kb_dir() -> Path:
    """The demo knowledge base: entity and alias files, and the documents its demo linker trains on."""
    return demo_dir() / "kb"


DEMO_BUILD = 2
"""Bumped when a demo index built by this code holds something an older one lacks."""


def demo_corpus() -> Path:
    """The demo corpus (BEIR ``corpus.jsonl`` layout)."""
    return demo_dir() / "corpus.jsonl"


def demo_index(encoder: Encoder, cache_dir: Path | None = None) -> SearchIndex:
    """Load the demo index, building it first if this corpus/encoder pair has none yet."""
    corpus = demo_corpus()
    root = cache_dir or default_cache_dir()
    # Keyed by the corpus, the encoder's weights *and runtime* (an int8 encoder's vectors are not the
    # float ones), and what a demo index holds (DEMO_BUILD; e.g. 2 = with its drift reference).
    path = root / "demo-index" / f"{sha256_file(corpus)[:12]}-{cache_key(encoder)}-b{DEMO_BUILD}"
    if path.exists():
        try:
            return SearchIndex.load(path)
        except ArtifactError as exc:
            logger.warning("rebuilding the demo index: %s", exc)
    logger.info("building the demo index at %s", path)
    return SearchIndex.build(corpus, path, encoder, cache=EmbeddingCache(root / "embeddings"), overwrite=True)
