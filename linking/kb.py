"""The knowledge base: entities, the alias table, and the indexes that find candidates by name.

A KB is built from one or more entity files (JSON lines: ``id``, ``name``, ``description``,
``aliases``, optional ``type``, ``popularity`` and ``short_description``) and one or more alias
tables (TSV with a header: ``alias <TAB> entity <TAB> rank`` or ``alias <TAB> entity <TAB>
prior``). Several files merge, so entities and aliases can be added later without retraining the
disambiguator: the model scores features, not entity ids.

A built KB is a directory with ``entities.jsonl``, ``aliases.tsv`` and ``manifest.json`` (kind
``kb``). Bad input rows raise :class:`KBFormatError` naming file and line, before anything is
written.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from artifacts import (
    Manifest,
    checksum_files,
    code_version,
    library_versions,
    sha256_file,
    staged_directory,
    utc_now,
)
from artifacts.textfile import text_lines
from linking.errors import KBFormatError
from linking.normalization import NAME_PARTICLES, guess_entity_type, name_variants, normalize_alias, strip_qualifier
from linking.types import AliasEntry, Entity

logger = logging.getLogger(__name__)

KB_KIND = "kb"
KB_FORMAT_VERSION = 1
ENTITIES_FILE = "entities.jsonl"
ALIASES_FILE = "aliases.tsv"
ENTITY_TYPES = ("person", "place", "organization", "other")


FUZZY_CACHE_SIZE = 65_536
"""Normalized surfaces whose fuzzy matches a KB remembers (the least recently used go first)."""


@dataclass(frozen=True, slots=True)
class NameMatch:
    """An entity found through a normalized name key: the key, and the entity's rank under it."""

    entity_id: str
    rank: int
    key: str


def read_entities(path: str | Path) -> list[Entity]:
    """Read an entity file (JSON lines), raising :class:`KBFormatError` at the first bad row."""
    return [entity for _line_no, entity in read_numbered_entities(path)]


def read_numbered_entities(path: str | Path) -> list[tuple[int, Entity]]:
    """The entities of an entity file with their 1-based line numbers (for errors naming file:line).

    Raises :class:`KBFormatError` at the first unreadable file, invalid UTF-8 line, invalid JSON or
    bad field.
    """
    path = Path(path)
    entities: list[tuple[int, Entity]] = []
    for line_no, line in text_lines(path, KBFormatError):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KBFormatError(path, line_no, f"not valid JSON: {exc.msg} (column {exc.colno})") from exc
        entities.append((line_no, _entity_from_row(row, path, line_no)))
    return entities


def _entity_from_row(row: Any, path: Path, line_no: int) -> Entity:
    if not isinstance(row, dict):
        raise KBFormatError(path, line_no, "an entity must be a JSON object")
    entity_id = row.get("id")
    if not isinstance(entity_id, str) or not entity_id.strip():
        raise KBFormatError(path, line_no, "missing or empty 'id'")
    name = row.get("name", entity_id)
    if not isinstance(name, str) or not name.strip():
        raise KBFormatError(path, line_no, f"entity {entity_id!r}: 'name' must be a non-empty string")
    description = row.get("description", "")
    if not isinstance(description, str):
        raise KBFormatError(path, line_no, f"entity {entity_id!r}: 'description' must be a string")
    aliases = row.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise KBFormatError(path, line_no, f"entity {entity_id!r}: 'aliases' must be a list of strings")
    entity_type = row.get("type")
    if entity_type is not None and entity_type not in ENTITY_TYPES:
        raise KBFormatError(path, line_no, f"entity {entity_id!r}: 'type' must be one of {', '.join(ENTITY_TYPES)}")
    popularity = row.get("popularity")
    if popularity is not None and (isinstance(popularity, bool) or not isinstance(popularity, int | float)):
        raise KBFormatError(path, line_no, f"entity {entity_id!r}: 'popularity' must be a number")
    short_description = row.get("short_description") or ""
    if not isinstance(short_description, str):
        raise KBFormatError(path, line_no, f"entity {entity_id!r}: 'short_description' must be a string")
    return Entity(
        entity_id=entity_id,
        name=name,
        description=description,
        aliases=tuple(a for a in aliases if a.strip()),
        entity_type=entity_type,
        popularity=float(popularity) if popularity is not None else None,
        short_description=short_description.strip(),
    )


def read_aliases(path: str | Path) -> list[tuple[AliasEntry, int]]:
    """Read an alias table: ``(entry, line)`` pairs. The header names the third column ``rank`` or ``prior``.

    With priors, the ranks are the order of the priors per alias (highest first).
    """
    path = Path(path)
    lines = text_lines(path, KBFormatError, skip_blank=False)
    first = next(lines, None)
    if first is None:
        raise KBFormatError(path, 1, "empty file; expected a header 'alias<TAB>entity<TAB>rank'")
    header = [h.strip().lower() for h in first[1].split("\t")]
    if len(header) != 3 or header[:2] != ["alias", "entity"] or header[2] not in ("rank", "prior"):
        raise KBFormatError(path, 1, "header must be 'alias<TAB>entity<TAB>rank' or 'alias<TAB>entity<TAB>prior'")
    use_prior = header[2] == "prior"
    rows: list[tuple[str, str, float, int]] = []
    for line_no, line in lines:
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise KBFormatError(path, line_no, f"expected 3 tab-separated fields, found {len(fields)}")
        alias, entity_id, value = (f.strip() for f in fields)
        if not alias or not entity_id:
            raise KBFormatError(path, line_no, "empty alias or entity")
        try:
            number = float(value)
        except ValueError as exc:
            raise KBFormatError(path, line_no, f"{header[2]} {value!r} is not a number") from exc
        if use_prior and not 0.0 <= number <= 1.0:
            raise KBFormatError(path, line_no, f"prior {number} is outside [0, 1]")
        if not use_prior and (number < 1 or number != int(number)):
            raise KBFormatError(path, line_no, f"rank {value!r} must be a positive integer")
        rows.append((alias, entity_id, number, line_no))
    if use_prior:
        by_alias: dict[str, list[tuple[str, float, int]]] = defaultdict(list)
        for alias, entity_id, prior, line_no in rows:
            by_alias[alias].append((entity_id, prior, line_no))
        out = []
        for alias, entries in by_alias.items():
            for rank, (entity_id, _prior, line_no) in enumerate(sorted(entries, key=lambda e: -e[1]), start=1):
                out.append((AliasEntry(alias, entity_id, rank), line_no))
        return out
    return [(AliasEntry(alias, entity_id, int(number)), line_no) for alias, entity_id, number, line_no in rows]


class KnowledgeBase:
    """Entities and the name indexes candidate generation reads.

    Indexes (built in the constructor from the entities and alias entries, nothing read from disk):
    the exact alias table (alias -> entries by rank), a normalized alias index (normalized alias ->
    entities by best rank), a variant index (normalized name variants and KB aliases -> entities by
    popularity), and a fuzzy key list for misspellings.

    Example:
        >>> kb = KnowledgeBase([Entity("Paris", "Paris", "Paris is the capital of France.")],
        ...                    [AliasEntry("Paris", "Paris", 1)])
        >>> [m.entity_id for m in kb.alias_lookup("PARIS")]
        ['Paris']
    """

    def __init__(self, entities: Iterable[Entity], aliases: Iterable[AliasEntry]) -> None:
        self._entities: dict[str, Entity] = {}
        for entity in entities:
            self._entities[entity.entity_id] = entity
        self._aliases: dict[str, list[AliasEntry]] = defaultdict(list)
        for entry in aliases:
            if entry.entity_id not in self._entities:
                raise KeyError(f"alias {entry.alias!r} refers to unknown entity {entry.entity_id!r}")
            self._aliases[entry.alias].append(entry)
        for entries in self._aliases.values():
            entries.sort(key=lambda e: e.rank)
        self._types = {eid: e.entity_type or guess_entity_type(e.description) for eid, e in self._entities.items()}
        self._popularity = self._compute_popularity()
        self._normalized = self._build_normalized_index()
        self._variants = self._build_variant_index()
        self._fuzzy_keys = sorted(set(self._normalized) | set(self._variants))
        self._fuzzy_array = np.asarray(self._fuzzy_keys, dtype=object)
        self._fuzzy_lengths = np.fromiter(map(len, self._fuzzy_keys), dtype=np.int64, count=len(self._fuzzy_keys))
        # A scan costs 1-3 ms on a 41k-entity KB; news repeats the names the alias table misses.
        self._fuzzy_scan = lru_cache(maxsize=FUZZY_CACHE_SIZE)(self._scan_fuzzy_keys)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_fuzzy_scan"]  # a cache (and a bound method wrapper, which does not pickle)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fuzzy_scan = lru_cache(maxsize=FUZZY_CACHE_SIZE)(self._scan_fuzzy_keys)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_files(cls, entity_paths: Sequence[str | Path], alias_paths: Sequence[str | Path]) -> KnowledgeBase:
        """Read and validate entity files and alias tables, merging them in order.

        Raises :class:`KBFormatError` (file, line) for a bad row, a duplicate entity id, or an
        alias that refers to an entity no file defines.
        """
        entities: dict[str, Entity] = {}
        origin: dict[str, str] = {}
        for path in entity_paths:
            for line_no, entity in read_numbered_entities(path):
                if entity.entity_id in entities:
                    raise KBFormatError(
                        path, line_no, f"duplicate entity id {entity.entity_id!r} (first at {origin[entity.entity_id]})"
                    )
                entities[entity.entity_id] = entity
                origin[entity.entity_id] = f"{path}:{line_no}"
        aliases: dict[tuple[str, str], AliasEntry] = {}
        for path in alias_paths:
            for entry, line_no in read_aliases(path):
                if entry.entity_id not in entities:
                    raise KBFormatError(
                        path, line_no, f"alias {entry.alias!r} refers to unknown entity {entry.entity_id!r}"
                    )
                key = (entry.alias, entry.entity_id)
                if key not in aliases or aliases[key].rank > entry.rank:
                    aliases[key] = entry
        return cls(entities.values(), aliases.values())

    def save(self, directory: str | Path, *, inputs: dict[str, Any] | None = None, overwrite: bool = False) -> Manifest:
        """Write the KB to ``directory`` atomically, with a manifest (kind ``kb``)."""
        with staged_directory(directory, overwrite=overwrite) as staging:
            with open(staging / ENTITIES_FILE, "w", encoding="utf-8") as handle:
                for entity in sorted(self._entities.values(), key=lambda e: e.entity_id):
                    row: dict[str, Any] = {
                        "id": entity.entity_id,
                        "name": entity.name,
                        "description": entity.description,
                        "aliases": list(entity.aliases),
                    }
                    if entity.entity_type is not None:
                        row["type"] = entity.entity_type
                    if entity.popularity is not None:
                        row["popularity"] = entity.popularity
                    if entity.short_description:
                        row["short_description"] = entity.short_description
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            with open(staging / ALIASES_FILE, "w", encoding="utf-8") as handle:
                handle.write("alias\tentity\trank\n")
                for alias in sorted(self._aliases):
                    for entry in self._aliases[alias]:
                        handle.write(f"{entry.alias}\t{entry.entity_id}\t{entry.rank}\n")
            manifest = Manifest(
                kind=KB_KIND,
                format_version=KB_FORMAT_VERSION,
                created_at=utc_now(),
                files=checksum_files(staging),
                inputs=inputs or {},
                stats={
                    "entities": len(self._entities),
                    "aliases": len(self._aliases),
                    "alias_entries": sum(len(v) for v in self._aliases.values()),
                },
                libraries=library_versions(),
                code_version=code_version(),
            )
            manifest.write(staging)
        logger.info("wrote KB %s (%d entities) to %s", manifest.content_id, len(self._entities), directory)
        return manifest

    @classmethod
    def load(cls, directory: str | Path) -> KnowledgeBase:
        """Load a KB directory written by :meth:`save`, verifying its manifest's checksums."""
        directory = Path(directory)
        manifest = Manifest.read(directory, kind=KB_KIND, max_format_version=KB_FORMAT_VERSION)
        manifest.verify(directory)
        kb = cls.from_files([directory / ENTITIES_FILE], [directory / ALIASES_FILE])
        kb.manifest = manifest
        return kb

    manifest: Manifest | None = None

    @property
    def content_id(self) -> str:
        """The manifest's content id when loaded from disk, else a hash of the entity ids and aliases."""
        if self.manifest is not None:
            return self.manifest.content_id
        from artifacts import sha256_bytes

        text = "\n".join(f"{e.entity_id}\t{e.name}\t{e.description}\t{e.short_description}" for e in self.entities())
        return sha256_bytes(text.encode())[:12]

    # -- access ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entities)

    def __contains__(self, entity_id: object) -> bool:
        return entity_id in self._entities

    def entity(self, entity_id: str) -> Entity:
        """The entity with this id (``KeyError`` if absent)."""
        return self._entities[entity_id]

    def entities(self) -> list[Entity]:
        """All entities, ordered by id (a stable order for embedding matrices)."""
        return [self._entities[k] for k in sorted(self._entities)]

    def entity_type(self, entity_id: str) -> str:
        """The entity's coarse type (given in the KB, or guessed from its description)."""
        return self._types[entity_id]

    def popularity(self, entity_id: str) -> float:
        """A popularity weight: the given one, else the sum of 1/rank over the alias rows naming it."""
        return self._popularity.get(entity_id, 0.0)

    def alias_count(self) -> int:
        return len(self._aliases)

    def alias_lookup(self, surface: str) -> list[AliasEntry]:
        """The alias-table entries of ``surface``: exact match first, else its normalized key."""
        exact = self._aliases.get(surface)
        if exact:
            return list(exact)
        return [AliasEntry(surface, m.entity_id, m.rank) for m in self._normalized.get(normalize_alias(surface), [])]

    def has_exact_alias(self, surface: str) -> bool:
        return surface in self._aliases

    def variant_lookup(self, surface: str) -> list[str]:
        """Entities one of whose name variants (or KB aliases) normalizes like ``surface``, most popular first."""
        return list(self._variants.get(normalize_alias(surface), []))

    def fuzzy_keys(self, surface: str, *, limit: int = 3, cutoff: float = 85.0) -> list[tuple[str, float]]:
        """Name keys close to ``surface`` in spelling (rapidfuzz ratio >= ``cutoff``), best first."""
        key = normalize_alias(surface)
        if len(key) < 4:
            return []
        return list(self._fuzzy_scan(key, limit, cutoff))

    def _scan_fuzzy_keys(self, key: str, limit: int, cutoff: float) -> tuple[tuple[str, float], ...]:
        # fuzz.ratio is 100 * (1 - indel distance / (a + b)) and the distance is at least |a - b|, so
        # keys whose length alone keeps them under the cutoff cannot match: skip them (the same
        # result, several times faster). The kept keys stay in their sorted order, so ties break alike.
        a, lengths = len(key), self._fuzzy_lengths
        possible = 100.0 * (1.0 - np.abs(lengths - a) / (lengths + a)) >= cutoff - 1e-6
        choices = self._fuzzy_array[possible].tolist()
        matches = process.extract(key, choices, scorer=fuzz.ratio, limit=limit, score_cutoff=cutoff)
        return tuple((match, float(score)) for match, score, _ in matches if match != key)

    def key_entities(self, key: str) -> list[str]:
        """Entities under a normalized key: alias-index ones by rank, then variant ones."""
        seen: dict[str, None] = {}
        for match in self._normalized.get(key, []):
            seen.setdefault(match.entity_id)
        for entity_id in self._variants.get(key, []):
            seen.setdefault(entity_id)
        return list(seen)

    # -- index building ---------------------------------------------------------------------------

    def _compute_popularity(self) -> dict[str, float]:
        popularity: dict[str, float] = defaultdict(float)
        for entries in self._aliases.values():
            for entry in entries:
                popularity[entry.entity_id] += 1.0 / entry.rank
        for entity_id, entity in self._entities.items():
            if entity.popularity is not None:
                popularity[entity_id] = entity.popularity
        return dict(popularity)

    def _build_normalized_index(self) -> dict[str, list[NameMatch]]:
        best: dict[str, dict[str, int]] = defaultdict(dict)
        for alias, entries in self._aliases.items():
            key = normalize_alias(alias)
            for entry in entries:
                current = best[key].get(entry.entity_id)
                if current is None or entry.rank < current:
                    best[key][entry.entity_id] = entry.rank
        return {
            key: [NameMatch(eid, rank, key) for eid, rank in sorted(ranks.items(), key=lambda kv: (kv[1], kv[0]))]
            for key, ranks in best.items()
        }

    def _build_variant_index(self) -> dict[str, list[str]]:
        index: dict[str, set[str]] = defaultdict(set)
        place_names = self._place_names()
        for entity_id, entity in self._entities.items():
            is_person = self._types[entity_id] == "person"
            for name in (entity.name, entity_id):
                for key in name_variants(name, is_person=is_person):
                    index[key].add(entity_id)
            if self._types[entity_id] == "organization":
                for key in short_organization_names(entity.name, place_names):
                    index[key].add(entity_id)
            for alias in entity.aliases:
                key = normalize_alias(alias)
                if key:
                    index[key].add(entity_id)
        return {key: sorted(ids, key=lambda eid: (-self._popularity.get(eid, 0.0), eid)) for key, ids in index.items()}

    def _place_names(self) -> frozenset[str]:
        """Normalized names (qualifier stripped) and KB aliases of the entities typed ``place``."""
        names: set[str] = set()
        for entity_id, entity in self._entities.items():
            if self._types[entity_id] == "place":
                names.add(normalize_alias(strip_qualifier(entity.name)))
                names.update(normalize_alias(alias) for alias in entity.aliases)
        names.discard("")
        return frozenset(names)


LEGAL_FORMS = frozenset({"ag", "co", "corp", "gmbh", "inc", "llc", "ltd", "plc", "sa"})
"""Normalized legal-form suffixes of company names ("Apple Inc."): never a short name on their own."""


def short_organization_names(name: str, place_names: frozenset[str] | set[str]) -> set[str]:
    """Normalized short forms of an organisation's name that starts with a place: the name without the place.

    Teams, newspapers and firms named "<place> <name>" go by the rest of the name in text ("the
    Bulls", "the Tribune", "United"), which neither the name variants nor a small alias table reach.
    Only a leading place (an entity name or alias of a ``place`` in the KB) is dropped, so "Apple
    Inc." does not become "Inc." and "University of Chicago" stays whole; a short form that is
    only a type word ("Club", "Airlines") or a legal form ("Inc.") is no name and is skipped.

    Example:
        >>> sorted(short_organization_names("Chicago Bulls", {"chicago"}))
        ['bulls']
        >>> sorted(short_organization_names("New York Red Bulls", {"new york", "york"}))
        ['red bulls']
        >>> short_organization_names("Chicago Club", {"chicago"}), short_organization_names("Apple Inc.", {"apple"})
        (set(), set())
    """
    words = normalize_alias(strip_qualifier(name)).split()
    out: set[str] = set()
    for cut in range(1, len(words)):
        if " ".join(words[:cut]) not in place_names:
            continue
        rest = words[cut:]
        tail = " ".join(rest)
        if rest[0] in NAME_PARTICLES or rest[-1] in LEGAL_FORMS or len(tail) < 3:
            continue
        # "Airlines", "Police", "Party": type words (plural or not) name no one on their own
        if guess_entity_type(tail) == "other" and guess_entity_type(tail.removesuffix("s")) == "other":
            out.add(tail)
    return out


def file_inputs(entity_paths: Sequence[str | Path], alias_paths: Sequence[str | Path]) -> dict[str, Any]:
    """Manifest ``inputs``: each source file's path and SHA-256."""
    return {
        "entities": [{"path": str(p), "sha256": sha256_file(p)} for p in entity_paths],
        "aliases": [{"path": str(p), "sha256": sha256_file(p)} for p in alias_paths],
    }
