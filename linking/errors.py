"""Named errors of entity linking. ``service/`` maps them to status codes."""

from __future__ import annotations

from pathlib import Path


class LinkingError(Exception):
    """Base class of entity-linking errors."""


class KBFormatError(LinkingError, ValueError):
    """A KB input file has a bad row. ``path`` and ``line`` (1-based) say where."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


class BenchmarkFormatError(LinkingError, ValueError):
    """A benchmark file (documents with gold mentions) is malformed; the message names file and line."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


class ModelNotTrainedError(LinkingError):
    """A disambiguator is used before it was trained or loaded."""
