"""A search index split by document into N shards under one parent manifest.

Layout of a sharded index directory::

    manifest.json        kind "search-index", format version 2, ``params.sharding`` lists the shards
                         (name, first document, document count, content id); ``files`` the checksum
                         of every data file, the shards' included
    drift_reference.json the drift histograms of the whole index
    shard-000/ ...       one directory per shard (layout in :class:`~retrieval.shards.LocalShard`)

Shards hold consecutive ranges of the corpus (sizes differ by at most one). BM25 statistics are
global (:mod:`retrieval.bm25_stats`) and every retriever's list is cut and merged by (score,
global position), so searching the shards returns exactly the documents, order and scores of an
unsharded index of the same corpus built with the same parameters (with the ``flat`` FAISS type;
``hnsw`` and ``ivfpq`` are approximate per shard). The whole directory is published atomically.

:meth:`retrieval.index.SearchIndex.load` recognizes the parent manifest and returns a
:class:`ShardedSearchIndex`, so every command that opens an index opens a sharded one too.

Example:
    >>> index = ShardedSearchIndex.build("corpus.jsonl", "out/index", encoder, shards=3)  # doctest: +SKIP
    >>> index = SearchIndex.load("out/index")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import (
    ArtifactNotFoundError,
    CorruptArtifactError,
    Manifest,
    checksum_files,
    code_version,
    library_versions,
    sha256_file,
    staged_directory,
    utc_now,
)
from artifacts.drift import read_reference, write_reference
from retrieval.bm25 import BM25Config, BM25Index
from retrieval.bm25_stats import BM25Statistics, build_shard_bm25
from retrieval.corpus import load_corpus, resolve_corpus_path
from retrieval.dense import DenseIndex, EmbeddingCache, Encoder, FaissConfig, embed_documents
from retrieval.errors import IndexBuildError
from retrieval.index import KIND, SearchIndex, drift_reference, register_layout, zero_empty_rows
from retrieval.shards import (
    SHARD_DOCS_FILE,
    SHARD_FORMAT_VERSION,
    SHARD_KIND,
    IndexShard,
    LocalShard,
    Scatter,
    ShardedBM25,
    ShardedDense,
    ShardOpener,
    sequential,
)
from retrieval.tokenization import Tokenizer, TokenizerConfig
from retrieval.types import Document

logger = logging.getLogger(__name__)

SHARDED_FORMAT_VERSION = 2
PARTITION = "contiguous"


def shard_name(number: int) -> str:
    return f"shard-{number:03d}"


def partition(count: int, shards: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each of ``shards`` consecutive ranges over ``count`` documents.

    Sizes differ by at most one, the larger first. Raises :class:`IndexBuildError` unless
    ``1 <= shards <= count`` (an empty shard could not be searched nor trained).

    Example:
        >>> partition(7, 3)
        [(0, 3), (3, 5), (5, 7)]
    """
    if not isinstance(shards, int) or shards < 1:
        raise IndexBuildError(f"shards: must be at least 1, got {shards!r}")
    if shards > count:
        raise IndexBuildError(f"shards: {shards} shards for a corpus of {count} documents (at most one per document)")
    base, extra = divmod(count, shards)
    bounds = []
    start = 0
    for number in range(shards):
        stop = start + base + (1 if number < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class ShardedSearchIndex(SearchIndex):
    """A :class:`SearchIndex` whose BM25 and dense retrievers scatter to shards and merge.

    ``documents`` are the whole corpus in order (snippets and reranker features read them);
    ``shards`` answer the retrieval calls. With remote shards, pass the remote layer's ``scatter``.
    """

    def __init__(
        self,
        documents: list[Document],
        shards: list[IndexShard],
        manifest: Manifest,
        path: Path | None = None,
        *,
        tokenizer: Tokenizer,
        vocabulary: dict[str, int],
        scatter: Scatter = sequential,
    ) -> None:
        params = manifest.params
        doc_ids = [doc.doc_id for doc in documents]
        position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
        bm25 = ShardedBM25(
            shards, doc_ids, tokenizer, BM25Config.from_dict(params["bm25"]), vocabulary, position, scatter
        )
        dense = ShardedDense(
            shards,
            doc_ids,
            FaissConfig.from_dict(params["faiss"]),
            int(params["encoder"]["dimension"]),
            position,
            scatter,
        )
        super().__init__(documents, bm25, dense, manifest, path)  # type: ignore[arg-type]
        self.shards = shards

    @classmethod
    def build(  # type: ignore[override]
        cls,
        corpus: str | Path,
        out: str | Path,
        encoder: Encoder,
        *,
        shards: int,
        bm25_config: BM25Config | None = None,
        tokenizer_config: TokenizerConfig | None = None,
        faiss_config: FaissConfig | None = None,
        cache: EmbeddingCache | None = None,
        batch_size: int = 64,
        overwrite: bool = False,
        show_progress: bool = False,
        strict: bool = False,
        embedder: Callable[[list[str]], np.ndarray] | None = None,
    ) -> ShardedSearchIndex:
        """Index a BEIR corpus into ``shards`` shards under ``out``, published atomically.

        Raises :class:`IndexBuildError` (before any embedding) when the shard count does not fit
        the corpus or a shard is too small to train the FAISS index; nothing is written then.
        Empty documents are handled as by :meth:`SearchIndex.build` (indexed with a warning, or with
        ``strict`` a :class:`~retrieval.errors.DataFormatError` naming file and line). ``embedder`` as
        in :meth:`SearchIndex.build`.
        """
        started = time.perf_counter()
        corpus_path = resolve_corpus_path(corpus)
        corpus_checksum = sha256_file(corpus_path)
        documents = load_corpus(corpus_path, strict=strict)
        bounds = partition(len(documents), shards)
        bm25_config = bm25_config or BM25Config()
        faiss_config = faiss_config or FaissConfig()
        smallest = min(stop - start for start, stop in bounds)
        faiss_config.check(encoder.dimension, smallest, where=f"the smallest of {shards} shards")
        tokenizer = Tokenizer(tokenizer_config)
        texts = [doc.contents for doc in documents]

        logger.info("corpus BM25 statistics of %d documents", len(documents))
        t0 = time.perf_counter()
        corpus_tokens = tokenizer.tokenize_many(texts)
        statistics = BM25Statistics.from_tokens(corpus_tokens)
        bm25_seconds = time.perf_counter() - t0

        logger.info("embedding %d documents with %s", len(documents), encoder.name)
        t0 = time.perf_counter()
        embeddings = embed_documents(
            encoder, texts, cache=cache, batch_size=batch_size, show_progress=show_progress, compute=embedder
        )
        embed_seconds = time.perf_counter() - t0
        embeddings, empty_rows = zero_empty_rows(documents, embeddings)

        encoder_info = {"name": encoder.name, "checksum": encoder.checksum, "dimension": encoder.dimension}
        runtime = getattr(encoder, "runtime", None)
        if runtime is not None:
            encoder_info["runtime"] = runtime
        built: list[LocalShard] = []
        t0 = time.perf_counter()
        for number, (start, stop) in enumerate(bounds):
            part = documents[start:stop]
            doc_ids = [doc.doc_id for doc in part]
            t1 = time.perf_counter()
            bm25 = build_shard_bm25(corpus_tokens[start:stop], doc_ids, statistics, bm25_config, tokenizer)
            bm25_seconds += time.perf_counter() - t1
            dense = DenseIndex.build(embeddings[start:stop], doc_ids, faiss_config)
            built.append(LocalShard(shard_name(number), part, bm25, dense))
        shard_seconds = time.perf_counter() - t0
        params = {
            "bm25": bm25_config.to_dict(),
            "tokenizer": tokenizer.config.to_dict(),
            "faiss": faiss_config.to_dict(),
            "encoder": encoder_info,
        }
        with staged_directory(out, overwrite=overwrite) as staging:
            entries: list[dict[str, Any]] = []
            for shard, (start, stop) in zip(built, bounds, strict=True):
                shard_manifest = Manifest(
                    kind=SHARD_KIND,
                    format_version=SHARD_FORMAT_VERSION,
                    created_at=utc_now(),
                    files={},
                    params={**params, "shard": {"name": shard.name, "start": start, "doc_count": stop - start}},
                    inputs={"corpus": {"path": str(corpus_path), "sha256": corpus_checksum}},
                    parents={"encoder": encoder.checksum},
                    stats={"doc_count": stop - start},
                    libraries=library_versions(),
                    code_version=code_version(),
                )
                shard.save(staging / shard.name, shard_manifest)
                written = Manifest.read(staging / shard.name, kind=SHARD_KIND)
                entries.append(
                    {"name": shard.name, "start": start, "doc_count": stop - start, "content_id": written.content_id}
                )
            # A provisional index over the built shards gives the drift reference its searches.
            provisional = cls._assemble(documents, built, _placeholder_manifest(params), None, tokenizer, statistics)
            reference = drift_reference(documents, provisional.bm25, provisional.dense, encoder)
            write_reference(staging, reference)
            manifest = Manifest(
                kind=KIND,
                format_version=SHARDED_FORMAT_VERSION,
                created_at=utc_now(),
                # Every data file, the shards' too; the shards' own manifests are pinned by content id.
                files=checksum_files(staging),
                params={**params, "sharding": {"count": shards, "partition": PARTITION, "shards": entries}},
                inputs={"corpus": {"path": str(corpus_path), "sha256": corpus_checksum}},
                parents={"encoder": encoder.checksum, **{e["name"]: e["content_id"] for e in entries}},
                stats={
                    "doc_count": len(documents),
                    "empty_documents": len(empty_rows),
                    "vocabulary_size": len(statistics.vocabulary) + 1,  # with bm25s's empty token, as unsharded
                    "bm25_statistics": statistics.to_dict(),
                    "build_seconds": {
                        "bm25": round(bm25_seconds, 3),
                        "embed": round(embed_seconds, 3),
                        "shards": round(shard_seconds, 3),
                        "total": round(time.perf_counter() - started, 3),
                    },
                },
                libraries=library_versions(),
                code_version=code_version(),
            )
            manifest.write(staging)
        logger.info("index %s (%d shards) written to %s", manifest.version, shards, out)
        index = cls._assemble(documents, built, manifest, Path(out), tokenizer, statistics)
        index.drift_reference = reference
        return index

    @classmethod
    def _assemble(
        cls,
        documents: list[Document],
        shards: list[LocalShard],
        manifest: Manifest,
        path: Path | None,
        tokenizer: Tokenizer,
        statistics: BM25Statistics,
    ) -> ShardedSearchIndex:
        return cls(documents, list(shards), manifest, path, tokenizer=tokenizer, vocabulary=statistics.vocabulary)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        verify: bool = True,
        scatter: Scatter = sequential,
        open_shard: ShardOpener | None = None,
    ) -> ShardedSearchIndex:
        """Open a sharded index directory. With ``verify``, every file must match its checksum.

        ``scatter`` runs the per-shard calls of every search (:func:`retrieval.shards.concurrent`
        runs them at once). ``open_shard(directory, name, documents)`` gives the shard that answers
        for a shard directory instead of loading it here: a remote shard (e.g. a Ray Serve deployment
        that loaded the directory itself). This process then holds the documents (for snippets and
        reranker features) and one shard's BM25 vocabulary, memory-mapped, but no shard's index.

        Raises ``ArtifactNotFoundError`` or ``CorruptArtifactError`` naming the shard (missing
        directory, a file that fails its checksum, a shard manifest the parent does not list).
        """
        path = Path(path)
        manifest = Manifest.read(path, kind=KIND, max_format_version=SHARDED_FORMAT_VERSION)
        try:
            entries = manifest.params["sharding"]["shards"]
            faiss_config = FaissConfig.from_dict(manifest.params["faiss"])
        except (KeyError, TypeError) as exc:
            raise CorruptArtifactError(f"{path}: manifest has no valid sharding parameters: {exc}") from exc
        for entry in entries:
            if not (path / entry["name"]).is_dir():
                raise ArtifactNotFoundError(f"{path}: shard {entry['name']} is missing (no directory {entry['name']}/)")
        if verify:
            _verify(path, manifest, [entry["name"] for entry in entries])
        shards: list[IndexShard] = []
        for entry in entries:
            name = entry["name"]
            shard_manifest = Manifest.read(path / name, kind=SHARD_KIND, max_format_version=SHARD_FORMAT_VERSION)
            if shard_manifest.content_id != entry["content_id"]:
                raise CorruptArtifactError(
                    f"{path}: shard {name}: its manifest lists other files than the parent expects "
                    f"(content id {shard_manifest.content_id}, expected {entry['content_id']})"
                )
            try:
                if open_shard is None:
                    shard: IndexShard = LocalShard.load(path / name, faiss_config, name=name)
                else:
                    shard = open_shard(path / name, name, load_corpus(path / name / SHARD_DOCS_FILE))
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise CorruptArtifactError(f"{path}: shard {name}: cannot load: {exc}") from exc
            if shard.doc_count != entry["doc_count"]:
                raise CorruptArtifactError(
                    f"{path}: shard {name} holds {shard.doc_count} documents, the manifest says {entry['doc_count']}"
                )
            shards.append(shard)
        documents = [doc for shard in shards for doc in shard.documents]
        if isinstance(shards[0], LocalShard):
            first = shards[0].bm25
        else:  # the analyzer and vocabulary (the same in every shard: corpus-wide statistics)
            first = BM25Index.load(path / shards[0].name, [doc.doc_id for doc in shards[0].documents], mmap=True)
        try:
            reference = read_reference(path)
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptArtifactError(f"{path}: cannot read the drift reference: {exc}") from exc
        vocabulary = {term: i for term, i in first.vocabulary.items() if term}
        index = cls(
            documents, list(shards), manifest, path, tokenizer=first.tokenizer, vocabulary=vocabulary, scatter=scatter
        )
        index.drift_reference = reference
        return index

    @classmethod
    def load_single(
        cls,
        path: str | Path,
        open_shard: ShardOpener,
        *,
        name: str = "shard-000",
        verify: bool = True,
        scatter: Scatter = sequential,
    ) -> ShardedSearchIndex:
        """An unsharded index directory as a sharded index of one shard, ``name``, opened by ``open_shard``.

        An unsharded index holds the files of one shard (documents, BM25, dense), so a remote layer
        can serve it like a sharded one (``serve --ray``); one shard's statistics are the corpus's,
        so results equal :meth:`SearchIndex.load`'s. The version is the index's own.

        Raises ``CorruptArtifactError`` for a file that fails its checksum (with ``verify``) or a
        sharded directory (use :meth:`load`).
        """
        path = Path(path)
        manifest = Manifest.read(path, kind=KIND)
        if is_sharded(manifest):
            raise CorruptArtifactError(f"{path}: a sharded index; open it with ShardedSearchIndex.load")
        if verify:
            _verify(path, manifest, [])
        documents = load_corpus(path / SHARD_DOCS_FILE)
        try:
            shard = open_shard(path, name, documents)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise CorruptArtifactError(f"{path}: shard {name}: cannot load: {exc}") from exc
        bm25 = BM25Index.load(path, [doc.doc_id for doc in documents], mmap=True)
        try:
            reference = read_reference(path)
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptArtifactError(f"{path}: cannot read the drift reference: {exc}") from exc
        vocabulary = {term: i for term, i in bm25.vocabulary.items() if term}
        index = cls(
            documents, [shard], manifest, path, tokenizer=bm25.tokenizer, vocabulary=vocabulary, scatter=scatter
        )
        index.drift_reference = reference
        return index


def is_sharded(manifest: Manifest) -> bool:
    """Whether a search-index manifest is a sharded index's parent manifest."""
    return "sharding" in manifest.params


def _placeholder_manifest(params: dict[str, Any]) -> Manifest:
    return Manifest(kind=KIND, format_version=SHARDED_FORMAT_VERSION, created_at=utc_now(), files={}, params=params)


def _verify(path: Path, manifest: Manifest, shard_names: list[str]) -> None:
    """Check every file against the parent manifest, naming the shard a bad file belongs to."""
    problems: dict[str, list[str]] = {}
    for name, expected in sorted(manifest.files.items()):
        owner = name.split("/", 1)[0] if "/" in name and name.split("/", 1)[0] in shard_names else ""
        file = path / name
        if not file.is_file():
            problems.setdefault(owner, []).append(f"{name}: missing")
        elif sha256_file(file) != expected:
            problems.setdefault(owner, []).append(f"{name}: checksum mismatch")
    if problems:
        parts = [(f"shard {owner}: " if owner else "") + "; ".join(found) for owner, found in sorted(problems.items())]
        raise CorruptArtifactError(f"{path}: " + " | ".join(parts))


register_layout("sharding", lambda path, verify: ShardedSearchIndex.load(path, verify=verify))
