"""Writing artifact directories so that a reader never sees a half-written one.

A build writes into a hidden staging directory beside its destination; only when everything,
manifest included, is on disk does one ``rename`` make it visible. A build that dies leaves a
``.staging-*`` directory behind, which the next build in that parent removes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from artifacts.errors import ArtifactError

logger = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"


def fsync_tree(directory: Path) -> None:
    """Flush every file under ``directory`` and the directories themselves to stable storage."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in [*sorted(p for p in directory.rglob("*") if p.is_dir()), directory]:
        fsync_dir(path)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_staging(parent: Path) -> list[Path]:
    """Remove staging directories left in ``parent`` by builds that did not finish."""
    removed = []
    if parent.is_dir():
        for path in parent.iterdir():
            if path.name.startswith(STAGING_PREFIX) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    if removed:
        logger.info(
            "removed %d leftover staging director%s in %s", len(removed), "y" if len(removed) == 1 else "ies", parent
        )
    return removed


@contextlib.contextmanager
def staged_directory(destination: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit, publish it at ``destination`` atomically.

    On an exception the staging directory is removed and ``destination`` is untouched. With
    ``overwrite``, an existing destination is replaced (moved aside, then removed); without it an
    existing destination is an error raised before any work is done.

    Example:
        >>> with staged_directory("out/index") as tmp:  # doctest: +SKIP
        ...     (tmp / "data.npy").write_bytes(b"...")
    """
    destination = Path(destination)
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    if destination.exists() and not overwrite:
        raise ArtifactError(f"{destination} already exists (use overwrite to replace it)")
    clean_staging(parent)
    staging = parent / f"{STAGING_PREFIX}{destination.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        fsync_tree(staging)
        if destination.exists():
            retired = parent / f"{STAGING_PREFIX}retired-{destination.name}-{uuid.uuid4().hex[:8]}"
            os.rename(destination, retired)
            os.rename(staging, destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, destination)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
