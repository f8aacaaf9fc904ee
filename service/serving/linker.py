"""The linker a server serves: loaded from a KB and a model, or the demo's, and swapped in place.

``load_linker`` builds it: a KB directory and a model directory when given, else the demo KB
shipped in ``service/demo/kb`` with a small disambiguator trained at start-up on the demo's own
documents (``train.jsonl`` there, written by us; no benchmark data). ``swap_kb`` and
``swap_model`` are the :class:`~service.serving.lifecycle.Lifecycle` loaders of the ``kb`` and
``linker`` kinds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from linking import (
    Disambiguator,
    DisambiguatorConfig,
    EntityLinker,
    KnowledgeBase,
    MentionDetector,
    load_spacy,
    prepare_documents,
    read_benchmark,
    train_disambiguator,
)
from linking.drift import linking_reference
from retrieval.dense import Encoder
from retrieval.drift import Histogram, read_reference
from service.demo import demo_kb_dir

logger = logging.getLogger(__name__)


@dataclass
class LoadedLinker:
    """A linker and the versions of the artifacts behind it."""

    linker: EntityLinker
    kb_version: str
    model_version: str
    drift_reference: dict[str, Histogram] = field(default_factory=dict)


def load_linker(encoder: Encoder, kb_dir: Path | None = None, model_dir: Path | None = None) -> LoadedLinker:
    """The served linker: ``kb_dir`` + ``model_dir``, or the demo KB with a model trained on the demo documents."""
    detector = MentionDetector(load_spacy())
    reference: dict[str, Histogram] = {}
    demo_kb = demo_kb_dir()
    if kb_dir is not None:
        kb = KnowledgeBase.load(kb_dir)
        kb_version = kb.manifest.version if kb.manifest is not None else "kb@unknown"
    else:
        kb = KnowledgeBase.from_files([demo_kb / "entities.jsonl"], [demo_kb / "aliases.tsv"])
        kb_version = f"kb@demo-{kb.content_id}"
    linker = EntityLinker(kb, encoder, detector=detector)
    if model_dir is not None:
        model, manifest = Disambiguator.load(model_dir)
        linker.scorer = model
        model_version = manifest.version
        reference = read_reference(Path(model_dir))
    elif kb_dir is None:
        model = train_disambiguator(
            prepare_documents(linker, read_benchmark(demo_kb / "train.jsonl"), "demo"),
            DisambiguatorConfig(model_type="logistic"),
        )
        linker.scorer = model
        model_version = "linker@demo"
        reference = linking_reference(linker, read_benchmark(demo_kb / "train.jsonl"), sample=20)
    else:
        model_version = "prior-baseline"
    logger.info("linking: %s (%d entities), %s", kb_version, len(kb), model_version)
    return LoadedLinker(linker, kb_version, model_version, reference)


def swap_kb(path: Path, current: LoadedLinker) -> LoadedLinker:
    """The current linker on the KB at ``path``: same model, detector and encoder (a KB grows without
    retraining the disambiguator). The KB's entity embeddings are built (or read from cache) here."""
    kb = KnowledgeBase.load(path)
    old = current.linker
    linker = EntityLinker(kb, old.encoder, old.scorer, detector=old.detector, config=old.config)
    linker.link("warm up")  # builds the entity index before the swap, not on the first request
    version = kb.manifest.version if kb.manifest is not None else "kb@unknown"
    return LoadedLinker(linker, version, current.model_version, current.drift_reference)


def swap_model(path: Path, current: LoadedLinker) -> LoadedLinker:
    """The current linker with the disambiguator model at ``path``."""
    model, manifest = Disambiguator.load(path)
    old = current.linker
    linker = EntityLinker(old.kb, old.encoder, model, detector=old.detector, config=old.config)
    return LoadedLinker(linker, current.kb_version, manifest.version, read_reference(path) or current.drift_reference)
