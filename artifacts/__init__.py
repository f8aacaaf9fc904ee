"""On-disk artifacts: manifests, checksums, crash-safe publishing, provenance."""

from artifacts.checksums import sha256_bytes, sha256_file, sha256_tree
from artifacts.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    CorruptArtifactError,
    IncompatibleArtifactError,
    NoPreviousVersionError,
    VersionNotFoundError,
)
from artifacts.manifest import MANIFEST_NAME, Manifest, checksum_files
from artifacts.storage import clean_staging, staged_directory
from artifacts.versions import code_version, library_versions, utc_now

__all__ = [
    "MANIFEST_NAME",
    "ArtifactError",
    "ArtifactNotFoundError",
    "CorruptArtifactError",
    "IncompatibleArtifactError",
    "Manifest",
    "NoPreviousVersionError",
    "VersionNotFoundError",
    "checksum_files",
    "clean_staging",
    "code_version",
    "library_versions",
    "sha256_bytes",
    "sha256_file",
    "sha256_tree",
    "staged_directory",
    "utc_now",
]
