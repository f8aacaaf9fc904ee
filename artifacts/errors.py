"""Named errors for on-disk artifacts. The service maps them to status codes."""

from __future__ import annotations


class ArtifactError(Exception):
    """Base class: an artifact (index, model, KB) cannot be used."""


class ArtifactNotFoundError(ArtifactError):
    """The artifact directory or one of its files does not exist."""


class CorruptArtifactError(ArtifactError):
    """The artifact exists but its manifest or files are malformed or fail their checksums."""


class IncompatibleArtifactError(ArtifactError):
    """The artifact is of another kind, or of a format version this code cannot read."""


class VersionNotFoundError(ArtifactNotFoundError):
    """No version in the registry matches the given name (or a prefix matches several)."""


class NoPreviousVersionError(ArtifactError):
    """A rollback was asked for, but the registry remembers no earlier active version."""
