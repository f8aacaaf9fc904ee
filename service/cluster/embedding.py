"""Embedding a corpus on a Ray cluster: a Ray Data pipeline over a pool of encoder actors.

Each actor loads the encoder once (the ONNX runtime by default) and encodes the batches Ray Data
hands it; documents travel with their row number and the vectors are put back in corpus order on
the driver, so the matrix is the one :func:`retrieval.dense.embed_documents` would return, row for
row (identical for a row-independent encoder; within float rounding for ONNX, whose padding depends
on which texts share a run). The embedding cache is read first and filled after, under the same key
(encoder cache key, corpus checksum) as a single-process build, so either build reuses the other's
vectors.

Texts are ``Document.contents`` (title and text), the unit :class:`retrieval.index.SearchIndex`
embeds. The corpus is read and validated by :func:`retrieval.corpus.iter_corpus` (errors name the
file and line) and handed to Ray Data in blocks of ``block_rows``.

Example:
    >>> with connect(None) as cluster:  # doctest: +SKIP
    ...     result = embed_corpus("data/scifact", EncoderSpec(runtime="onnx"), config=RayEmbedConfig(actors=2))
    >>> result.matrix.shape  # doctest: +SKIP
    (5183, 384)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import sha256_file
from retrieval.corpus import iter_corpus, resolve_corpus_path
from retrieval.dense import DEFAULT_ENCODER, EmbeddingCache, Encoder, cache_key, texts_checksum
from retrieval.errors import DataFormatError, InvalidRequestError

logger = logging.getLogger(__name__)

EncoderFactory = Callable[[], Encoder]
"""Builds the encoder inside each actor; it must pickle (a module-level class or a ``functools.partial``)."""


@dataclass(frozen=True)
class EncoderSpec:
    """A picklable encoder factory: ``name`` on ``runtime`` (torch, onnx, onnx-int8), ``threads`` per actor.

    ``onnx_cache_dir`` is where the ONNX graph is exported or found (default: the sleuth cache); the
    actors of one host share it, so the graph is exported once.
    """

    name: str = DEFAULT_ENCODER
    runtime: str = "onnx"
    threads: int = 1
    onnx_cache_dir: str | None = None

    def __call__(self) -> Encoder:
        from retrieval.onnx_encoder import RUNTIMES, OnnxEncoder, load_encoder

        if self.runtime not in RUNTIMES:
            raise InvalidRequestError("runtime", f"must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.runtime == "torch":
            return load_encoder(self.name, "torch")
        return OnnxEncoder.load(
            self.name, quantize=self.runtime == "onnx-int8", threads=self.threads, cache_dir=self.onnx_cache_dir
        )


@dataclass(frozen=True)
class RayEmbedConfig:
    """How the embedding job is spread.

    ``cpus_per_actor`` is what each actor reserves from Ray's scheduler, not what it uses (that is the
    encoder's thread count). It must stay below 1 on small machines: on two cores a pool of two 1-CPU
    actors leaves nothing for Ray Data's own tasks and deadlocks.
    """

    actors: int = 2
    cpus_per_actor: float = 0.5
    batch_rows: int = 256
    block_rows: int = 1024
    encode_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise InvalidRequestError("actors", f"must be at least 1, got {self.actors}")
        if not 0 < self.cpus_per_actor <= 64:
            raise InvalidRequestError("cpus_per_actor", f"must be within (0, 64], got {self.cpus_per_actor}")
        for name in ("batch_rows", "block_rows", "encode_batch_size"):
            if getattr(self, name) < 1:
                raise InvalidRequestError(name, f"must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True, eq=False)
class CorpusEmbeddings:
    """Document ids in corpus order and their embeddings, one row each."""

    doc_ids: tuple[str, ...]
    matrix: np.ndarray = field(repr=False)
    corpus_checksum: str
    from_cache: bool
    seconds: float

    @property
    def docs_per_second(self) -> float:
        return len(self.doc_ids) / self.seconds if self.seconds > 0 else float("inf")


class EncodeBatch:
    """The Ray Data callable class: one encoder per actor, loaded once in the constructor."""

    def __init__(self, factory: EncoderFactory, encode_batch_size: int = 64) -> None:
        encoder = factory()
        # The encoder that fills the document cache (a torch encoder hands documents to its float32
        # ONNX graph: one cache content per weights), so the actors compute what a local build would.
        document_encoder = getattr(encoder, "document_encoder", None)
        self._encoder = document_encoder() if callable(document_encoder) else encoder
        self._batch_size = encode_batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(text) for text in batch["text"]]
        vectors = self._encoder.encode(texts, batch_size=self._batch_size)
        return {"row": np.asarray(batch["row"], dtype=np.int64), "embedding": np.asarray(vectors, dtype=np.float32)}


def block_count(rows: int, config: RayEmbedConfig) -> int:
    """Blocks of at most ``block_rows`` rows, and at least one per actor (never more than the rows).

    Ray Data hands a block to one actor, so a corpus of fewer than ``block_rows`` rows in one block
    would leave all but one actor idle.
    """
    return max(min(rows, config.actors), -(-rows // config.block_rows))


def embed_texts(texts: Sequence[str], factory: EncoderFactory, config: RayEmbedConfig | None = None) -> np.ndarray:
    """Embed ``texts`` on the connected Ray cluster; row ``i`` of the result is ``texts[i]``'s vector.

    The cluster must be connected (:func:`service.cluster.runtime.connect`). Ray Data may deliver
    batches in any order; each row carries its index and is placed by it, and a row missing or
    repeated in the output is an error, never a silently shifted matrix.
    """
    import ray.data

    config = config or RayEmbedConfig()
    if not texts:
        raise InvalidRequestError("texts", "nothing to embed")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    items = [{"row": row, "text": text} for row, text in enumerate(texts)]
    blocks = block_count(len(items), config)
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        EncodeBatch,
        fn_constructor_kwargs={"factory": factory, "encode_batch_size": config.encode_batch_size},
        compute=ray.data.ActorPoolStrategy(size=config.actors),
        num_cpus=config.cpus_per_actor,
        batch_size=config.batch_rows,
        batch_format="numpy",
    )
    out: np.ndarray | None = None
    seen = np.zeros(len(texts), dtype=bool)
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        rows = np.asarray(batch["row"], dtype=np.int64)
        vectors = np.asarray(batch["embedding"], dtype=np.float32)
        if out is None:
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        if seen[rows].any():
            raise RuntimeError(f"Ray Data returned row {int(rows[seen[rows]][0])} twice")
        out[rows] = vectors
        seen[rows] = True
    if out is None or not seen.all():
        missing = int(np.flatnonzero(~seen)[0]) if out is not None else 0
        raise RuntimeError(f"Ray Data returned {int(seen.sum())} of {len(texts)} rows (row {missing} missing)")
    return out


def embed_corpus(
    corpus: str | Path,
    factory: EncoderFactory,
    *,
    config: RayEmbedConfig | None = None,
    cache: EmbeddingCache | None = None,
    encoder_key: str | None = None,
) -> CorpusEmbeddings:
    """Embed a BEIR corpus (file or directory) on the connected Ray cluster, in corpus order.

    With a ``cache``, the vectors are looked up under the key a single-process build uses at batch
    size ``config.batch_rows`` first and stored after a miss. ``encoder_key`` is
    :func:`retrieval.dense.cache_key` of the encoder the actors load; a caller that already holds
    that encoder (an index build does, for its manifest) passes it, otherwise the factory is run once here to learn it.
    """
    started = time.perf_counter()
    path = resolve_corpus_path(corpus)
    checksum = sha256_file(path)
    doc_ids: list[str] = []
    texts: list[str] = []
    for doc in iter_corpus(path):
        doc_ids.append(doc.doc_id)
        texts.append(doc.contents)
    if not texts:
        raise DataFormatError(f"{path}: corpus is empty")
    key: str | None = None
    config = config or RayEmbedConfig()
    digest = texts_checksum(texts)
    if cache is not None:
        # The key retrieval.dense.embed_documents files these texts under at this batch size.
        key = f"{encoder_key if encoder_key is not None else cache_key(factory())}-b{config.batch_rows}"
        cached = cache.get(key, digest, len(texts))
        if cached is not None:
            logger.info("embeddings of %s read from cache (%d x %d)", path, *cached.shape)
            return CorpusEmbeddings(tuple(doc_ids), cached, checksum, True, time.perf_counter() - started)
    logger.info("embedding %d documents of %s on %d Ray actor(s)", len(texts), path, config.actors)
    matrix = embed_texts(texts, factory, config)
    if cache is not None and key is not None:
        cache.put(key, digest, matrix)
    return CorpusEmbeddings(tuple(doc_ids), matrix, checksum, False, time.perf_counter() - started)


def describe(result: CorpusEmbeddings) -> dict[str, Any]:
    """A JSON-ready summary of an embedding run (for logs and benchmark scripts)."""
    return {
        "documents": len(result.doc_ids),
        "dimension": int(result.matrix.shape[1]),
        "from_cache": result.from_cache,
        "seconds": round(result.seconds, 3),
        "docs_per_second": round(result.docs_per_second, 1),
    }
