"""The linker a server serves: loaded from a KB and a model, or the demo's, and swapped in place.

``load_linker`` builds it: a KB directory and a model directory when given (the library's
:meth:`EntityLinker.open <linking.EntityLinker.open>`), else the demo KB shipped in
``service/demo/kb`` with a small disambiguator trained at start-up on the demo's own documents
(``train.jsonl`` there, written by us; no benchmark data) through
:func:`~linking.train_linker`. ``swap_kb`` and ``swap_model`` are the
:class:`~service.serving.lifecycle.Lifecycle` loaders of the ``kb`` and ``linker`` kinds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from artifacts import Manifest
from linking import (
    Disambiguator,
    DisambiguatorConfig,
    EntityLinker,
    KnowledgeBase,
    LinkerTrainingConfig,
    MentionDetector,
    load_spacy,
    read_benchmark,
    train_linker,
)
from retrieval.dense import Encoder
from retrieval.drift import Histogram, read_reference
from service.demo import demo_kb_dir

logger = logging.getLogger(__name__)

DEMO_TRAINING = LinkerTrainingConfig(
    model=DisambiguatorConfig(model_type="logistic"), cross_validate=False, augment=False, drift_sample=20
)
"""How the demo model is trained at start-up: the demo's few documents are too few for cross-validation."""

LINKING_RUNTIME = "onnx-int8"
"""The encoder runtime of linking unless a model says otherwise: ``train linker``'s default (int8
weights, about twice as fast as float32; the default model scores the same on aida_testa, see
docs/benchmarks.md)."""


def model_runtime(model_dir: Path | None) -> str | None:
    """The encoder runtime the model at ``model_dir`` was trained with (its manifest), if it says."""
    if model_dir is None:
        return None
    runtime = Manifest.read(model_dir).inputs.get("encoder_runtime")
    return str(runtime) if runtime else None


def linking_runtime(model_dir: Path | None, requested: str | None = None) -> str:
    """How a linker encodes contexts: ``requested`` if given, else the model's training runtime (its
    features were learned on those vectors), else :data:`LINKING_RUNTIME`."""
    return requested or model_runtime(model_dir) or LINKING_RUNTIME


@dataclass
class LoadedLinker:
    """A linker and the versions of the artifacts behind it."""

    linker: EntityLinker
    kb_version: str
    model_version: str
    drift_reference: dict[str, Histogram] = field(default_factory=dict)


def load_linker(encoder: Encoder, kb_dir: Path | None = None, model_dir: Path | None = None) -> LoadedLinker:
    """The served linker: ``kb_dir`` + ``model_dir``, or the demo KB with a model trained on the demo documents.

    Logs each phase (KB and entity vectors, model) with its duration.
    """
    started = time.perf_counter()
    if kb_dir is not None:
        logger.info(
            "loading KB %s, its entity vectors and the linker model %s", kb_dir, model_dir or "(prior baseline)"
        )
        linker = EntityLinker.open(kb_dir, model_dir, encoder)
        kb_version = linker.kb.manifest.version if linker.kb.manifest is not None else "kb@unknown"
        model_version = linker.model_version or ("linker@unknown" if model_dir is not None else "prior-baseline")
        reference = read_reference(Path(model_dir)) if model_dir is not None else {}
    else:
        demo_kb = demo_kb_dir()
        logger.info("loading the demo KB and its entity vectors")
        kb = KnowledgeBase.from_files([demo_kb / "entities.jsonl"], [demo_kb / "aliases.tsv"])
        kb_version = f"kb@demo-{kb.content_id}"
        linker = EntityLinker.build(kb, encoder, detector=MentionDetector(load_spacy()))
        if model_dir is not None:
            model, manifest = Disambiguator.load(model_dir)
            linker = linker.with_model(model, manifest)
            model_version = manifest.version
            reference = read_reference(Path(model_dir))
        else:
            logger.info("training the demo linker model on the demo documents")
            trained = train_linker(linker, [("demo", read_benchmark(demo_kb / "train.jsonl"))], DEMO_TRAINING)
            linker = trained.linker
            model_version = "linker@demo"
            reference = trained.drift_reference
    logger.info(
        "linking: %s (%d entities), %s loaded in %.1f s",
        kb_version,
        len(linker.kb),
        model_version,
        time.perf_counter() - started,
    )
    return LoadedLinker(linker, kb_version, model_version, reference)


def swap_kb(path: Path, current: LoadedLinker) -> LoadedLinker:
    """The current linker on the KB at ``path``: same model, detector and encoder (a KB grows without
    retraining the disambiguator). The KB's entity embeddings are built (or read from cache) here."""
    kb = KnowledgeBase.load(path)
    linker = current.linker.with_kb(kb)  # builds the entity vectors now, not on the first request
    version = kb.manifest.version if kb.manifest is not None else "kb@unknown"
    return LoadedLinker(linker, version, current.model_version, current.drift_reference)


def swap_model(
    path: Path, current: LoadedLinker, load_encoder: Callable[[str, str], Encoder] | None = None
) -> LoadedLinker:
    """The current linker with the disambiguator model at ``path``.

    A model whose manifest names another encoder runtime than the current linker's gets an encoder
    on that runtime (``load_encoder(name, runtime)``) and its entity vectors, built here, before
    the swap; a model that names none keeps the current encoder."""
    model, manifest = Disambiguator.load(path)
    linker = current.linker
    if linker.config.compile_trees:
        model.compile_trees()
    runtime = model_runtime(path)
    if load_encoder is not None and runtime is not None and getattr(linker.encoder, "runtime", None) != runtime:
        logger.info("the model %s was trained on %s vectors: loading that encoder", manifest.version, runtime)
        encoder = load_encoder(linker.encoder.name, runtime)
        linker = EntityLinker.build(linker.kb, encoder, detector=linker.detector, config=linker.config)
    linker = linker.with_model(model, manifest)
    return LoadedLinker(linker, current.kb_version, manifest.version, read_reference(path) or current.drift_reference)
