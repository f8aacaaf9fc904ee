"""The manifest every artifact directory carries: what it is, what made it, and its files' checksums.

A manifest is ``manifest.json`` in the artifact's directory. Its ``files`` map every data file
(relative path) to its SHA-256, so a reader can tell a complete artifact from a damaged one, and
``content_id`` (a hash of those checksums) names the artifact's content: two builds with the same
files have the same id whatever their build time.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artifacts.checksums import sha256_bytes, sha256_file
from artifacts.errors import (
    ArtifactNotFoundError,
    CorruptArtifactError,
    IncompatibleArtifactError,
)

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """Describes one artifact directory.

    Attributes:
        kind: what the artifact is ("search-index", "reranker", "kb", "linker", ...).
        format_version: the on-disk layout version of that kind.
        created_at: UTC build time, ISO 8601.
        files: relative path -> SHA-256 of every data file in the directory.
        params: the parameters the artifact was built with.
        inputs: checksums (and names) of the inputs it was built from.
        parents: lineage, role -> content id of artifacts it depends on (e.g. the encoder).
        stats: counts and sizes (documents, vocabulary, ...).
        metrics: offline evaluation results attached to it.
        libraries: library versions at build time.
        code_version: git commit of the code that built it, when known.
    """

    kind: str
    format_version: int
    created_at: str
    files: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=dict)
    code_version: str | None = None

    @property
    def content_id(self) -> str:
        """A 12-hex-digit id of the artifact's content (its files' checksums)."""
        listing = "\n".join(f"{name}\t{digest}" for name, digest in sorted(self.files.items()))
        return sha256_bytes(f"{self.kind}\n{listing}".encode())[:12]

    @property
    def version(self) -> str:
        """Human-readable version label: kind and content id."""
        return f"{self.kind}@{self.content_id}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["content_id"] = self.content_id
        return data

    def with_updates(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [name for name in ("kind", "format_version", "created_at", "files") if name not in data]
        if missing:
            raise CorruptArtifactError(f"manifest lacks required field(s): {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(
        cls,
        directory: str | Path,
        *,
        kind: str | None = None,
        max_format_version: int | None = None,
    ) -> Manifest:
        """Read ``manifest.json`` from ``directory``, checking kind and format version if given."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ArtifactNotFoundError(f"{directory}: no such artifact directory")
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise ArtifactNotFoundError(f"{directory}: no {MANIFEST_NAME} (not an artifact, or an unfinished build)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptArtifactError(f"{path}: unreadable manifest: {exc}") from exc
        if not isinstance(data, dict):
            raise CorruptArtifactError(f"{path}: manifest is not a JSON object")
        manifest = cls.from_dict(data)
        if kind is not None and manifest.kind != kind:
            raise IncompatibleArtifactError(f"{directory}: is a {manifest.kind!r}, expected a {kind!r}")
        if max_format_version is not None and manifest.format_version > max_format_version:
            raise IncompatibleArtifactError(
                f"{directory}: format version {manifest.format_version} is newer than this code reads "
                f"({max_format_version}); upgrade sleuth"
            )
        return manifest

    def verify(self, directory: str | Path) -> None:
        """Raise :class:`CorruptArtifactError` unless every listed file exists with its checksum."""
        directory = Path(directory)
        problems = []
        for name, expected in sorted(self.files.items()):
            path = directory / name
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif sha256_file(path) != expected:
                problems.append(f"{name}: checksum mismatch")
        if problems:
            raise CorruptArtifactError(f"{directory}: " + "; ".join(problems))


def checksum_files(directory: str | Path) -> dict[str, str]:
    """Checksums of every regular file under ``directory`` except the manifest itself."""
    directory = Path(directory)
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
