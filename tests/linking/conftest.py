"""Linking fixtures: a tiny KB written inline, a keyword fake encoder, spaCy, and the shared benchmarks.

The tiny KB's ambiguities are those of aida_train: "Paris" the city or the rugby league team,
"Washington" the city or the tennis player, "Hussein" of Jordan or Saddam."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from linking import AliasEntry, Entity, KnowledgeBase, LinkingDocument
from linking.types import GoldMention
from retrieval.dense import vector_cache_key
from tests.conftest import LINKING_DATA, FakeEncoder

KEYWORDS = [
    "basketball",
    "bulls",
    "nba",
    "actor",
    "film",
    "creed",
    "machine",
    "learning",
    "professor",
    "city",
    "france",
    "rugby",
    "iraq",
    "president",
    "newspaper",
    "singer",
    "football",
    "tennis",
    "cricket",
]

ENTITIES = [
    Entity(
        "Michael Jordan",
        "Michael Jordan",
        "Michael Jordan is an American basketball player of the Bulls in the NBA.",
        entity_type="person",
    ),
    Entity(
        "Michael B. Jordan",
        "Michael B. Jordan",
        "Michael B. Jordan is an American actor who starred in the film Creed.",
        entity_type="person",
    ),
    Entity(
        "Michael I. Jordan",
        "Michael I. Jordan",
        "Michael I. Jordan is a professor of machine learning.",
        entity_type="person",
    ),
    Entity("Paris", "Paris", "Paris is the capital city of France.", entity_type="place"),
    Entity(
        "Paris Saint-Germain",
        "Paris Saint-Germain",
        "Paris Saint-Germain is a French rugby league team.",
        entity_type="organization",
    ),
    Entity("Saddam Hussein", "Saddam Hussein", "Saddam Hussein was president of Iraq.", entity_type="person"),
    Entity("Hussein of Jordan", "Hussein of Jordan", "Hussein was king of Jordan.", entity_type="person"),
    Entity(
        "The Washington Post",
        "The Washington Post",
        "The Washington Post is an American newspaper.",
        entity_type="organization",
    ),
    Entity(
        "Washington, D.C.",
        "Washington, D.C.",
        "Washington is the capital city of the United States.",
        entity_type="place",
    ),
    Entity(
        "United Nations",
        "United Nations",
        "The United Nations is an intergovernmental organization.",
        entity_type="organization",
    ),
    Entity(
        "MaliVai Washington",
        "MaliVai Washington",
        "MaliVai Washington is an American tennis player.",
        entity_type="person",
    ),
    Entity("Steve Waugh", "Steve Waugh", "Steve Waugh is an Australian cricket captain.", entity_type="person"),
    Entity("Victoria (Australia)", "Victoria (Australia)", "Victoria is a state of Australia.", entity_type="place"),
]
ALIASES = [
    AliasEntry("Michael Jordan", "Michael Jordan", 1),
    AliasEntry("Michael Jordan", "Michael B. Jordan", 2),
    AliasEntry("Michael Jordan", "Michael I. Jordan", 3),
    AliasEntry("Paris", "Paris", 1),
    AliasEntry("Paris", "Paris Saint-Germain", 2),
    AliasEntry("Hussein", "Hussein of Jordan", 1),
    AliasEntry("Hussein", "Saddam Hussein", 2),
    AliasEntry("Saddam Hussein", "Saddam Hussein", 1),
    AliasEntry("Washington", "Washington, D.C.", 1),
    AliasEntry("Washington Post", "The Washington Post", 1),
    AliasEntry("Victoria", "Victoria (Australia)", 1),
    AliasEntry("UN", "United Nations", 1),
]


@pytest.fixture
def tiny_kb() -> KnowledgeBase:
    return KnowledgeBase(ENTITIES, ALIASES)


@pytest.fixture
def linking_encoder() -> FakeEncoder:
    return FakeEncoder(KEYWORDS)


@pytest.fixture
def kb_files(tmp_path: Path) -> tuple[Path, Path]:
    """The tiny KB as input files of ``kb build``."""
    entities = tmp_path / "entities.jsonl"
    entities.write_text(
        "".join(
            json.dumps(
                {"id": e.entity_id, "name": e.name, "description": e.description, "aliases": [], "type": e.entity_type}
            )
            + "\n"
            for e in ENTITIES
        ),
        encoding="utf-8",
    )
    aliases = tmp_path / "aliases.tsv"
    aliases.write_text(
        "alias\tentity\trank\n" + "".join(f"{a.alias}\t{a.entity_id}\t{a.rank}\n" for a in ALIASES), encoding="utf-8"
    )
    return entities, aliases


@pytest.fixture(scope="session")
def nlp():
    from linking import load_spacy

    return load_spacy()


@pytest.fixture(scope="session")
def linking_data() -> Path:
    if not LINKING_DATA.exists():
        pytest.fail(f"shared linking data missing at {LINKING_DATA}: the repo must sit beside ../shared")
    return LINKING_DATA


def doc(doc_id: str, text: str, *spans: tuple[str, str]) -> LinkingDocument:
    """A benchmark document whose gold mentions are (surface, entity): each surface's first occurrence."""
    mentions = []
    for surface, entity in spans:
        start = text.index(surface)
        mentions.append(GoldMention(start, start + len(surface), surface, entity))
    return LinkingDocument(doc_id, text, tuple(mentions))


class BatchSensitiveEncoder:
    """Hashed bag of words, with a trace of the batch it was encoded in (as padding leaves in torch's
    last bits): the same text gets other bits in another batch, so a cache filled another way shows."""

    def __init__(self, precision: str = "float32", libraries: str = "fake=1") -> None:
        self.name = "batch-sensitive"
        self.checksum = "b5e7c0ffee000001"
        self.dimension = 32
        self.precision = precision
        self.cache_key = vector_cache_key(self.checksum, precision, libraries)
        self.calls: list[int] = []

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % (self.dimension - 1)] += 1.0
            out[row, -1] = 0.1 + 1e-6 * (len(texts) % 7) + 1e-6 * (row % batch_size) / batch_size
        return out / np.linalg.norm(out, axis=1, keepdims=True)
