"""A neural cross-encoder reranker: a transformer that reads the query and a document together.

A bi-encoder (``retrieval/dense.py``) embeds the query and the document apart and compares the
vectors; a cross-encoder feeds ``[CLS] query [SEP] document [SEP]`` through one transformer and
reads a relevance logit off the ``[CLS]`` state (Nogueira & Cho, "Passage Re-ranking with BERT",
2019). It sees every query word next to every document word, which is what makes it better at
ordering a short list, and it costs one full forward pass per (query, candidate) pair, which is why
it only rescores the top ``depth`` fused candidates.

The model directory (written by :func:`retrieval.cross_training.train_cross_encoder`) holds
``reranker.json`` (``model_type`` ``"cross"``, the fused-prior weight, the depth, the maximum
sequence length), the sentence-transformers ``CrossEncoder`` in ``model/`` (Hugging Face
safetensors, never a pickle) and ``manifest.json`` (kind ``"reranker"``), so every loader of
rerankers (``eval search --mode rerank``, ``serve --reranker``, registry versions, experiment
arms) opens it through :func:`retrieval.rerankers.load_reranker`.

The final score of the top ``depth`` candidates is, as for the feature rerankers::

    score(d) = z(logit(q, d)) + prior_weight * z(1 / (60 + fused_rank(d)))

and the candidates below ``depth`` keep their fused order under them.

Example:
    >>> reranker = CrossEncoderReranker.load("models/cross")  # doctest: +SKIP
    >>> searcher = Searcher(index, encoder, reranker=reranker)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import ArtifactNotFoundError, CorruptArtifactError, Manifest, sha256_bytes, sha256_tree
from retrieval.index import SearchIndex
from retrieval.rerank import CONFIG_FILE, FORMAT_VERSION, KIND, mix_with_prior
from retrieval.rerank_features import RRF_K
from retrieval.types import ScoredHit

logger = logging.getLogger(__name__)

MODEL_TYPE = "cross"
CROSS_RUNTIMES = ("torch", "onnx")
OPSET = 17
ONNX_RUN_BATCH = 8
PROBE_PAIRS = (
    ("aspirin lowers the risk of heart attacks", "Aspirin\nLow-dose aspirin prevents myocardial infarction."),
    ("0-dimensional biomaterials show inductive properties.", "a"),
    ("a", "The quick brown fox jumps over the lazy dog " * 40),
)
MAX_PROBE_DIFFERENCE = 1e-3
"""Largest |logit(onnx) - logit(torch)| on the probe pairs before the ONNX graph may serve."""
MODEL_DIR = "model"
"""The sentence-transformers CrossEncoder inside a cross-encoder reranker directory."""


def tokenize_pairs(tokenizer: Any, queries: Sequence[str], texts: Sequence[str], max_length: int) -> Any:
    """Tokenized ``(query, document)`` pairs, padded to the longest, cut to ``max_length`` word pieces
    (the longer of the two is cut first, so a document loses its tail and a query stays whole)."""
    return tokenizer(
        list(queries),
        list(texts),
        padding=True,
        truncation="longest_first",
        max_length=max_length,
        return_tensors="pt",
    )


def pair_logits(
    model: Any, tokenizer: Any, query: str, texts: Sequence[str], max_length: int, batch_size: int
) -> np.ndarray:
    """The relevance logit of each ``(query, text)`` pair (``model`` a sequence classifier with one label)."""
    import torch

    model.eval()
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            features = tokenize_pairs(tokenizer, [query] * len(chunk), chunk, max_length)
            out.append(model(**features).logits[:, 0].float().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


class CrossEncoderReranker:
    """A :class:`retrieval.pipeline.Reranker` that scores the top ``depth`` candidates with a cross-encoder.

    ``cross_encoder`` is a sentence-transformers ``CrossEncoder`` with one output (its logit is the
    score). ``depth`` bounds the candidates scored per query whatever the request's rerank depth,
    because each one costs a forward pass (docs/models/reranker.md gives the CPU cost per depth).
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        cross_encoder: Any,
        prior_weight: float = 0.0,
        depth: int = 20,
        max_seq_length: int = 256,
        version: str = "reranker@unsaved",
        batch_size: int = 32,
        onnx: OnnxCrossEncoder | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.onnx = onnx
        self.runtime = "onnx" if onnx is not None else "torch"
        self.cross_encoder = cross_encoder
        self.prior_weight = float(prior_weight)
        self.depth = int(depth)
        self.max_seq_length = int(max_seq_length)
        self.version = version
        self.batch_size = batch_size

    def logits(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """The model's raw relevance logit of each text for ``query``."""
        if self.onnx is not None:
            return self.onnx.logits(query, texts)
        return pair_logits(
            self.cross_encoder.model, self.cross_encoder.tokenizer, query, texts, self.max_seq_length, self.batch_size
        )

    def score_logits(self, logits: np.ndarray, fused_ranks: np.ndarray) -> np.ndarray:
        """Final scores of candidates whose logits are known: the mix with the fused prior."""
        return mix_with_prior(logits, fused_ranks, self.prior_weight)

    def score(
        self,
        query: str,
        candidates: Sequence[ScoredHit],
        index: SearchIndex,
        query_vector: np.ndarray | None,
    ) -> np.ndarray:
        """Scores of the top ``depth`` candidates; the rest score below them in their fused order."""
        if not candidates:
            return np.zeros(0)
        head = candidates[: self.depth]
        ranks = np.fromiter((h.rank for h in head), dtype=np.float64, count=len(head))
        texts = [index.document(h.doc_id).contents for h in head]
        scores = self.score_logits(self.logits(query, texts), ranks)
        if len(candidates) == len(head):
            return scores
        # Equal scores below the head: the searcher breaks ties by fused rank.
        floor = float(scores.min()) - 1.0 if len(scores) else 0.0
        return np.concatenate([scores, np.full(len(candidates) - len(head), floor)])

    def config(self) -> dict[str, Any]:
        return {
            "model_type": MODEL_TYPE,
            "prior_weight": self.prior_weight,
            "depth": self.depth,
            "max_seq_length": self.max_seq_length,
            "rrf_k": RRF_K,
            "model_dir": MODEL_DIR,
        }

    def save(self, directory: Path) -> None:
        """Write the model and its config (the caller writes the manifest)."""
        self.cross_encoder.save(str(directory / MODEL_DIR))
        (directory / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(
        cls, path: str | Path, *, verify: bool = True, runtime: str = "torch", threads: int = 1
    ) -> CrossEncoderReranker:
        """Open a cross-encoder reranker directory on ``runtime`` (``torch`` or ``onnx``: ONNX Runtime
        float32 with ``threads`` intra-op threads, the graph exported once and cached under the
        weights checksum, checked against torch before it serves).

        Raises ``ArtifactNotFoundError`` (no directory, manifest, config or model),
        ``CorruptArtifactError`` (damaged or inconsistent files) or ``IncompatibleArtifactError``.
        """
        path = Path(path)
        manifest = Manifest.read(path, kind=KIND, max_format_version=FORMAT_VERSION)
        if verify:
            manifest.verify(path)
        try:
            config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
            if config["model_type"] != MODEL_TYPE:
                raise ValueError(f"model type {config['model_type']!r} is not {MODEL_TYPE!r}")
            prior_weight = float(config["prior_weight"])
            depth = int(config["depth"])
            max_seq_length = int(config["max_seq_length"])
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"{path}: missing {CONFIG_FILE}") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptArtifactError(f"{path}: unreadable {CONFIG_FILE}: {exc}") from exc
        if not (path / MODEL_DIR).is_dir():
            raise ArtifactNotFoundError(f"{path}: missing model directory {MODEL_DIR}/")
        if runtime not in CROSS_RUNTIMES:
            raise ValueError(f"unknown reranker runtime {runtime!r} (choose {', '.join(CROSS_RUNTIMES)})")
        try:
            model = load_cross_encoder(path / MODEL_DIR, max_seq_length)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptArtifactError(f"{path}: cannot load the cross-encoder: {exc}") from exc
        onnx = None
        if runtime == "onnx":
            checksum = str(manifest.stats.get("weights_checksum") or sha256_tree(path / MODEL_DIR)[:16])
            onnx = OnnxCrossEncoder.load(model, checksum, max_seq_length, threads=threads)
        return cls(model, prior_weight, depth, max_seq_length, manifest.version, onnx=onnx)


def load_cross_encoder(location: str | Path, max_seq_length: int, *, fresh_head: bool = False) -> Any:
    """A sentence-transformers ``CrossEncoder`` with one output on CPU.

    ``fresh_head``: ``location`` holds a plain encoder (e.g. the MiniLM weights); the classification
    head is new, drawn from torch's generator (seed it first for a reproducible start).
    """
    from sentence_transformers import CrossEncoder

    kwargs: dict[str, Any] = {"num_labels": 1} if fresh_head else {}
    model = CrossEncoder(str(location), max_length=max_seq_length, device="cpu", **kwargs)
    if getattr(model.model.config, "num_labels", 1) != 1:
        raise ValueError(f"{location}: a cross-encoder reranker needs one output, not {model.model.config.num_labels}")
    return model


class OnnxCrossEncoder:
    """The cross-encoder's transformer and head run by ONNX Runtime (float32).

    :meth:`load` exports the graph once (``torch.onnx.export``) into the cache directory
    (``<sleuth cache>/onnx``) under a key of the weights checksum and the library versions, as the
    ONNX encoder does (retrieval/onnx_encoder.py), opens a session, and refuses to serve
    (:class:`~retrieval.onnx_encoder.EncoderRuntimeError`) when its logits differ from torch's by
    more than :data:`MAX_PROBE_DIFFERENCE` on the probe pairs.
    """

    def __init__(self, session: Any, tokenizer: Any, max_length: int, input_names: Sequence[str]) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._max_length = max_length
        self._input_names = list(input_names)

    @classmethod
    def load(
        cls, cross_encoder: Any, checksum: str, max_length: int, *, threads: int = 1, cache_dir: Path | None = None
    ) -> OnnxCrossEncoder:
        import torch

        from retrieval.dense import default_cache_dir
        from retrieval.onnx_encoder import EncoderRuntimeError, _ort

        ort = _ort()
        tokenizer = cross_encoder.tokenizer
        sample = tokenize_pairs(tokenizer, ["a query"], ["a document to trace the graph"], max_length)
        input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
        versions = f"torch={torch.__version__};ort={ort.__version__};opset={OPSET}"
        directory = cache_dir or default_cache_dir() / "onnx"
        path = directory / f"{checksum}-cross-onnx-{sha256_bytes(versions.encode())[:8]}.onnx"
        if not path.is_file():
            _export_cross(cross_encoder.model, sample, input_names, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        runner = cls(session, tokenizer, max_length, input_names)
        worst = 0.0
        for query, text in PROBE_PAIRS:
            expected = pair_logits(cross_encoder.model, tokenizer, query, [text], max_length, 1)
            worst = max(worst, float(np.abs(runner.logits(query, [text]) - expected).max()))
        if worst > MAX_PROBE_DIFFERENCE:
            raise EncoderRuntimeError(f"onnx cross-encoder logits differ from torch by {worst:.2e}; use torch")
        logger.info("cross-encoder on onnx (%s, %d thread(s), probe difference %.1e)", path.name, threads, worst)
        return runner

    def logits(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Pairs sorted by length and run a few at a time (little padding; ORT gains nothing from big batches)."""
        out = np.zeros(len(texts), dtype=np.float64)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), ONNX_RUN_BATCH):
            rows = order[start : start + ONNX_RUN_BATCH]
            tokens = self._tokenizer(
                [query] * len(rows),
                [texts[i] for i in rows],
                padding=True,
                truncation="longest_first",
                max_length=self._max_length,
                return_tensors="np",
            )
            (logits,) = self._session.run(None, {n: np.asarray(tokens[n], dtype=np.int64) for n in self._input_names})
            out[rows] = logits[:, 0]
        return out


def _export_cross(model: Any, sample: Any, input_names: list[str], path: Path) -> None:
    """Export ``model`` (a sequence classifier) to ``path`` through a temporary file and a rename."""
    import os
    import warnings

    import torch

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(input_names, inputs, strict=True))).logits

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.onnx")
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in input_names}
    axes["logits"] = {0: "batch"}
    model.eval()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Logits().eval(),
                tuple(sample[n] for n in input_names),
                str(tmp),
                input_names=input_names,
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("exported the cross-encoder to %s", path)
