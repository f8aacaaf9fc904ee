"""A search index on disk: documents, a BM25 index and a FAISS index, with a manifest.

Layout of an index directory::

    manifest.json   kind "search-index", format version, parameters, checksums, provenance
    docs.jsonl      the documents in index order (ids, titles, texts: for snippets and features)
    bm25/           bm25s files and the analyzer settings
    dense.faiss     normalized document embeddings (float32) in a FAISS index

Empty documents (no title, no text) are indexed and counted (``stats.empty_documents``): BM25
never matches them, their dense vectors are zero and the searcher leaves them out of dense
results, so they are never retrieved; ``build(strict=True)`` refuses them instead.

Example:
    >>> index = SearchIndex.build("corpus.jsonl", "out/index", encoder)  # doctest: +SKIP
    >>> index = SearchIndex.load("out/index")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import (
    MANIFEST_NAME,
    ArtifactError,
    CorruptArtifactError,
    Manifest,
    checksum_files,
    code_version,
    library_versions,
    sha256_file,
    staged_directory,
    utc_now,
)
from artifacts.drift import Histogram, read_reference, write_reference
from retrieval.bm25 import BM25Config, BM25Index
from retrieval.corpus import load_corpus, resolve_corpus_path
from retrieval.dense import DenseIndex, EmbeddingCache, Encoder, FaissConfig, embed_documents
from retrieval.drift import SEARCH_FEATURES, pseudo_queries, search_features
from retrieval.tokenization import Tokenizer, TokenizerConfig
from retrieval.types import Document

logger = logging.getLogger(__name__)

KIND = "search-index"
FORMAT_VERSION = 1
DOCS_FILE = "docs.jsonl"


_LAYOUTS: dict[str, Callable[[Path, bool], SearchIndex]] = {}
"""Index layouts other than one directory, by the manifest ``params`` key that marks them."""


def register_layout(params_key: str, loader: Callable[[Path, bool], SearchIndex]) -> None:
    """Have :meth:`SearchIndex.load` hand a manifest with ``params_key`` to ``loader(path, verify)``.

    :mod:`retrieval.sharding` registers the sharded layout this way (it builds on this module, so
    this module cannot import it); importing :mod:`retrieval` registers every layout.
    """
    _LAYOUTS[params_key] = loader


def zero_empty_rows(documents: list[Document], embeddings: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """``embeddings`` with the rows of empty documents set to zero, and those rows' positions.

    An encoder still embeds "" (as its special tokens alone): a generic vector that sits close to
    many queries. A zero vector has no similarity to anything.
    """
    empty_rows = [i for i, doc in enumerate(documents) if doc.is_empty]
    if empty_rows:
        embeddings = np.array(embeddings, dtype=np.float32, copy=True)
        embeddings[empty_rows] = 0.0
    return embeddings, empty_rows


class SearchIndex:
    """The documents and both retrieval indexes of one corpus, as built together."""

    def __init__(
        self,
        documents: list[Document],
        bm25: BM25Index,
        dense: DenseIndex,
        manifest: Manifest,
        path: Path | None = None,
    ) -> None:
        self.documents = documents
        self.bm25 = bm25
        self.dense = dense
        self.manifest = manifest
        self.path = path
        self.drift_reference: dict[str, Histogram] = {}
        self._position = {doc.doc_id: i for i, doc in enumerate(documents)}
        self.empty_ids: frozenset[str] = frozenset(doc.doc_id for doc in documents if doc.is_empty)
        """Documents with neither title nor text: indexed, never retrieved."""

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def encoder_info(self) -> dict[str, Any]:
        return dict(self.manifest.params.get("encoder", {}))

    def position(self, doc_id: str) -> int:
        return self._position[doc_id]

    def document(self, doc_id: str) -> Document:
        return self.documents[self._position[doc_id]]

    @classmethod
    def build(
        cls,
        corpus: str | Path,
        out: str | Path,
        encoder: Encoder,
        *,
        bm25_config: BM25Config | None = None,
        tokenizer_config: TokenizerConfig | None = None,
        faiss_config: FaissConfig | None = None,
        cache: EmbeddingCache | None = None,
        batch_size: int = 64,
        overwrite: bool = False,
        show_progress: bool = False,
        strict: bool = False,
        embedder: Callable[[list[str]], np.ndarray] | None = None,
    ) -> SearchIndex:
        """Index a BEIR corpus file (or directory) into ``out``, published atomically.

        Empty documents are indexed with a logged warning (their count and first ids); with
        ``strict`` the first one is a :class:`~retrieval.errors.DataFormatError` naming file and line.
        ``embedder`` computes the document vectors on a cache miss instead of ``encoder`` (e.g. a pool
        of Ray Data actors loading the same weights; see :func:`retrieval.dense.embed_documents`);
        ``encoder`` still names the vectors in the manifest and the cache, and embeds the drift reference.
        """
        started = time.perf_counter()
        corpus_path = resolve_corpus_path(corpus)
        corpus_checksum = sha256_file(corpus_path)
        documents = load_corpus(corpus_path, strict=strict)
        bm25_config = bm25_config or BM25Config()
        faiss_config = faiss_config or FaissConfig()
        tokenizer = Tokenizer(tokenizer_config)
        texts = [doc.contents for doc in documents]
        doc_ids = [doc.doc_id for doc in documents]
        faiss_config.check(encoder.dimension, len(documents))  # before minutes of embedding, not after

        logger.info("indexing %d documents with BM25", len(documents))
        t0 = time.perf_counter()
        bm25 = BM25Index.build(texts, doc_ids, bm25_config, tokenizer)
        bm25_seconds = time.perf_counter() - t0

        logger.info("embedding %d documents with %s", len(documents), encoder.name)
        t0 = time.perf_counter()
        embeddings = embed_documents(
            encoder, texts, cache=cache, batch_size=batch_size, show_progress=show_progress, compute=embedder
        )
        embed_seconds = time.perf_counter() - t0
        embeddings, empty_rows = zero_empty_rows(documents, embeddings)
        dense = DenseIndex.build(embeddings, doc_ids, faiss_config)
        reference = drift_reference(documents, bm25, dense, encoder)

        with staged_directory(out, overwrite=overwrite) as staging:
            with open(staging / DOCS_FILE, "w", encoding="utf-8") as handle:
                for doc in documents:
                    row = {"_id": doc.doc_id, "title": doc.title, "text": doc.text}
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            bm25.save(staging)
            dense.save(staging)
            write_reference(staging, reference)
            manifest = Manifest(
                kind=KIND,
                format_version=FORMAT_VERSION,
                created_at=utc_now(),
                files=checksum_files(staging),
                params={
                    "bm25": bm25_config.to_dict(),
                    "tokenizer": tokenizer.config.to_dict(),
                    "faiss": faiss_config.to_dict(),
                    "encoder": {
                        "name": encoder.name,
                        "checksum": encoder.checksum,
                        "dimension": encoder.dimension,
                        **({"runtime": encoder.runtime} if hasattr(encoder, "runtime") else {}),
                    },
                },
                inputs={"corpus": {"path": str(corpus_path), "sha256": corpus_checksum}},
                parents={"encoder": encoder.checksum, **adapted_encoder_lineage(encoder.name)},
                stats={
                    "doc_count": len(documents),
                    "empty_documents": len(empty_rows),
                    "vocabulary_size": bm25.vocabulary_size,
                    "build_seconds": {
                        "bm25": round(bm25_seconds, 3),
                        "embed": round(embed_seconds, 3),
                        "total": round(time.perf_counter() - started, 3),
                    },
                },
                libraries=library_versions(),
                code_version=code_version(),
            )
            manifest.write(staging)
        logger.info("index %s written to %s", manifest.version, out)
        index = cls(documents, bm25, dense, manifest, Path(out))
        index.drift_reference = reference
        return index

    @classmethod
    def load(cls, path: str | Path, *, verify: bool = True) -> SearchIndex:
        """Open an index directory (a sharded one too). With ``verify``, every file must match its checksum.

        Raises ``ArtifactNotFoundError``, ``CorruptArtifactError`` or
        ``IncompatibleArtifactError`` (from :mod:`artifacts`) with a message naming the problem.
        """
        path = Path(path)
        manifest = Manifest.read(path, kind=KIND)
        for layout, loader in _LAYOUTS.items():
            if layout in manifest.params:
                return loader(path, verify)
        manifest = Manifest.read(path, kind=KIND, max_format_version=FORMAT_VERSION)
        if verify:
            manifest.verify(path)
        try:
            documents = load_corpus(path / DOCS_FILE, warn_empty=False)  # the build warned
            doc_ids = [doc.doc_id for doc in documents]
            bm25 = BM25Index.load(path, doc_ids)
            dense = DenseIndex.load(path, doc_ids, FaissConfig.from_dict(manifest.params["faiss"]))
            reference = read_reference(path)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise CorruptArtifactError(f"{path}: cannot load index: {exc}") from exc
        index = cls(documents, bm25, dense, manifest, path)
        index.drift_reference = reference
        return index


def adapted_encoder_lineage(name: str) -> dict[str, str]:
    """``{"encoder_artifact": content id}`` when the encoder is a ``sleuth train encoder`` directory."""
    path = Path(name)
    if not (path / MANIFEST_NAME).is_file():
        return {}
    try:
        return {"encoder_artifact": Manifest.read(path).version}
    except ArtifactError:
        return {}


def drift_reference(
    documents: Sequence[Document], bm25: BM25Index, dense: DenseIndex, encoder: Encoder
) -> dict[str, Histogram]:
    """Reference histograms of the drift features, from the index's own pseudo-queries."""
    queries = pseudo_queries(documents)
    vectors = encoder.encode(queries)
    dense_hits = dense.search(vectors, 2)
    rows = [search_features(q, bm25.search(q, 2), d) for q, d in zip(queries, dense_hits, strict=True)]
    return {name: Histogram.from_values([row[name] for row in rows]) for name in SEARCH_FEATURES}
