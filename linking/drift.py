"""Drift features of entity linking: mentions per document and the NIL rate.

A linker records reference histograms of both at training time (computed end to end on a sample of
its training documents) in ``drift_reference.json`` beside its model; the server compares live
Link traffic with them by PSI, like search (histograms and the monitor: :mod:`artifacts.drift`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from artifacts.drift import Histogram
from linking.pipeline import EntityLinker
from linking.types import Link, LinkingDocument

LINKING_FEATURES = ("mentions_per_doc", "nil_rate")


def link_features(links: Sequence[Link]) -> dict[str, float]:
    """The drift features of one linked document."""
    nil = sum(link.is_nil for link in links)
    return {"mentions_per_doc": float(len(links)), "nil_rate": nil / len(links) if links else 0.0}


def linking_reference(
    linker: EntityLinker, documents: Sequence[LinkingDocument], *, sample: int = 60, seed: int = 13
) -> dict[str, Histogram]:
    """Reference histograms from linking (end to end) a deterministic sample of ``documents``."""
    chosen = random.Random(seed).sample(list(documents), min(sample, len(documents)))
    rows = [link_features(linker.link(doc.text)) for doc in chosen]
    return {name: Histogram.from_values([row[name] for row in rows]) for name in LINKING_FEATURES}
