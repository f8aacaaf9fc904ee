"""Opening any reranker directory: a feature model or a cross-encoder, as its ``reranker.json`` says.

Example:
    >>> reranker = load_reranker("models/reranker")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

from retrieval.cross_encoder import CrossEncoderReranker
from retrieval.rerank import CONFIG_FILE, LearnedReranker


def load_reranker(
    path: str | Path, *, verify: bool = True, runtime: str = "torch", threads: int = 1
) -> LearnedReranker | CrossEncoderReranker:
    """Open a reranker directory: :class:`~retrieval.rerank.LearnedReranker` (LambdaMART, logistic
    regression) or :class:`~retrieval.cross_encoder.CrossEncoderReranker`. ``runtime`` (``torch``
    or ``onnx``) and ``threads`` apply to a cross-encoder only.

    Raises what the loaders raise (``ArtifactNotFoundError``, ``CorruptArtifactError``,
    ``IncompatibleArtifactError``; ``ValueError`` for an unknown runtime).
    """
    path = Path(path)
    try:
        model_type = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None  # LearnedReranker.load names what is missing or damaged
    if model_type == "cross":
        return CrossEncoderReranker.load(path, verify=verify, runtime=runtime, threads=threads)
    return LearnedReranker.load(path, verify=verify)
