"""A registry of artifact versions: immutable, content-addressed, with an atomic "active" pointer.

Every build (search index, KB, reranker, linker) can publish into a registry directory instead of
a path of its own. Layout::

    <root>/<kind>/<content-id>/      one version: the builder's files and manifest.json (immutable)
    <root>/<kind>/<content-id>/.published.json   when it was published (orders versions)
    <root>/<kind>/ACTIVE             the active pointer: {"version", "history", "updated_at"}
    <root>/<kind>/.staging-<token>/  a build in progress (or the leftover of one that died)
    <root>/<kind>/.locks/<token>     held (flock) by the build owning .staging-<token>
    <root>/<kind>/.lock              serializes publish, activate, rollback, gc, metrics

A version is named ``<kind>@<content-id>`` (as ``Manifest.version`` and ``SearchResponse.index_version``
name it); commands take that, the bare content id, or a unique prefix of it.

Crash safety: a build writes into ``.staging-<token>`` and becomes visible by one ``rename`` once
its files, manifest and checksums are on disk; the pointer is rewritten as a temporary file and
``os.replace``-d. A build killed at any moment (SIGKILL) leaves at most a hidden staging directory,
which the next publish in that kind removes: a staging directory is a leftover exactly when no
live process holds the ``flock`` on its lock file (the kernel drops the lock of a dead process).

Example:
    >>> registry = Registry.open("var/registry")  # doctest: +SKIP
    >>> built = registry.publish("search-index", lambda out: SearchIndex.build(corpus, out, encoder))  # doctest: +SKIP
    >>> registry.activate(built.info.version)  # doctest: +SKIP
    >>> registry.rollback("search-index")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from artifacts.errors import (
    ArtifactError,
    ArtifactNotFoundError,
    CorruptArtifactError,
    IncompatibleArtifactError,
    NoPreviousVersionError,
    VersionNotFoundError,
)
from artifacts.manifest import MANIFEST_NAME, Manifest
from artifacts.storage import fsync_dir, fsync_tree
from artifacts.versions import utc_now

logger = logging.getLogger(__name__)

REGISTRY_ENV = "SLEUTH_REGISTRY"
DEFAULT_REGISTRY = Path("var") / "registry"
ACTIVE_FILE = "ACTIVE"
PUBLISHED_FILE = ".published.json"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
LOCKS_DIR = ".locks"
KIND_LOCK = ".lock"
MAX_HISTORY = 50
_KIND_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_ID_RE = re.compile(r"^[0-9a-f]{4,64}$")

T = TypeVar("T")


def default_registry_path() -> Path:
    """``$SLEUTH_REGISTRY`` if set, else ``./var/registry``."""
    return Path(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)


@dataclass(frozen=True)
class VersionInfo:
    """One published version: its name, where it lives, its manifest and when it was published."""

    kind: str
    content_id: str
    path: Path
    manifest: Manifest
    published_at: str
    sequence: int  # nanoseconds since the epoch at publish time; orders a kind's versions

    @property
    def version(self) -> str:
        return f"{self.kind}@{self.content_id}"


@dataclass(frozen=True)
class ActivePointer:
    """The active version of one kind and the versions active before it (most recent first)."""

    kind: str
    version: str | None
    history: tuple[str, ...] = ()
    updated_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "history": list(self.history),
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Publication(Generic[T]):
    """What :meth:`Registry.publish` returns: the version and whatever the build function returned.

    ``created`` is False when an identical version (same files, same content id) was already
    published; the new build is then discarded and ``info`` names the existing one.
    """

    info: VersionInfo
    result: T
    created: bool


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` so that a reader sees the old or the new file, never a partial one."""
    tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def record_metrics(directory: str | Path, name: str, values: dict[str, Any]) -> Manifest:
    """Attach offline evaluation ``values`` under ``name`` to the manifest in ``directory``.

    Metrics are not part of an artifact's content id, so the artifact stays the same version; the
    manifest is rewritten atomically. Use :meth:`Registry.record_metrics` for registry versions
    (it also takes the registry lock).
    """
    directory = Path(directory)
    manifest = Manifest.read(directory)
    metrics = dict(manifest.metrics)
    metrics[name] = {**values, "recorded_at": utc_now()}
    updated = manifest.with_updates(metrics=metrics)
    write_json_atomic(directory / MANIFEST_NAME, updated.to_dict())
    return updated


class Registry:
    """Versions of artifacts under one root directory (see the module docstring for the layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def open(cls, root: str | Path | None = None) -> Registry:
        """The registry at ``root`` (default: :func:`default_registry_path`), created if missing."""
        registry = cls(root if root is not None else default_registry_path())
        registry.root.mkdir(parents=True, exist_ok=True)
        return registry

    # -- reading ---------------------------------------------------------------------------

    def kinds(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _KIND_RE.match(p.name))

    def versions(self, kind: str | None = None) -> list[VersionInfo]:
        """Published versions (of ``kind``, or of every kind), oldest first."""
        kinds = [kind] if kind is not None else self.kinds()
        found: list[VersionInfo] = []
        for name in kinds:
            kind_dir = self._kind_dir(name)
            if not kind_dir.is_dir():
                continue
            for path in kind_dir.iterdir():
                if path.is_dir() and _ID_RE.match(path.name):
                    try:
                        found.append(self._info(name, path))
                    except ArtifactError as exc:
                        logger.warning("skipping a damaged version directory: %s", exc)
        return sorted(found, key=lambda v: (v.kind, v.sequence, v.content_id))

    def get(self, ref: str) -> VersionInfo:
        """The version named ``ref``: ``kind@id``, an id, or a unique id prefix (4+ hex digits)."""
        kind, _, ident = ref.rpartition("@")
        ident = ident.strip().lower()
        if not _ID_RE.match(ident):
            raise VersionNotFoundError(f"{ref!r} is not a version name (kind@content-id, or a content id prefix)")
        candidates = [
            v for v in self.versions(kind or None) if v.content_id.startswith(ident) and (not kind or v.kind == kind)
        ]
        if not candidates:
            raise VersionNotFoundError(f"no version {ref!r} in the registry {self.root}")
        if len(candidates) > 1:
            names = ", ".join(v.version for v in candidates)
            raise VersionNotFoundError(f"{ref!r} is ambiguous in {self.root}: {names}")
        return candidates[0]

    def pointer(self, kind: str) -> ActivePointer:
        """The active pointer of ``kind`` (version ``None`` when nothing was activated yet)."""
        path = self._kind_dir(kind) / ACTIVE_FILE
        if not path.exists():
            return ActivePointer(kind=kind, version=None)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return ActivePointer(
                kind=kind,
                version=data.get("version"),
                history=tuple(data.get("history", ())),
                updated_at=data.get("updated_at"),
            )
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise CorruptArtifactError(f"{path}: unreadable active pointer: {exc}") from exc

    def active(self, kind: str) -> VersionInfo | None:
        """The active version of ``kind``, or ``None`` when none is active."""
        version = self.pointer(kind).version
        return self.get(version) if version else None

    def previous(self, kind: str) -> VersionInfo:
        """The version a rollback of ``kind`` would activate."""
        pointer = self.pointer(kind)
        for version in pointer.history:
            with contextlib.suppress(VersionNotFoundError):
                return self.get(version)
        raise NoPreviousVersionError(f"no earlier active {kind} version to roll back to in {self.root}")

    # -- publishing ------------------------------------------------------------------------

    def publish(self, kind: str, build: Callable[[Path], T]) -> Publication[T]:
        """Run ``build(out)``, which must create the artifact directory ``out`` with its manifest,
        then publish it atomically as a new version of ``kind``.

        The version becomes visible only complete and checksummed. If ``build`` raises (or the
        process dies), nothing is published; leftovers are removed by the next publish. Publishing
        does not activate: call :meth:`activate`.
        """
        kind_dir = self._kind_dir(kind)
        kind_dir.mkdir(parents=True, exist_ok=True)
        self.clean(kind)
        token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        with self._build_lock(kind_dir, token):
            staging = kind_dir / f"{STAGING_PREFIX}{token}"
            staging.mkdir()
            try:
                out = staging / "artifact"
                result = build(out)
                manifest = Manifest.read(out)
                if manifest.kind != kind:
                    raise IncompatibleArtifactError(f"the build produced a {manifest.kind!r}, not a {kind!r}")
                manifest.verify(out)
                sequence = time.time_ns()
                published = {"published_at": utc_now(), "sequence": sequence, "version": manifest.version}
                (out / PUBLISHED_FILE).write_text(json.dumps(published, sort_keys=True) + "\n", encoding="utf-8")
                fsync_tree(out)
                target = kind_dir / manifest.content_id
                with self._kind_lock(kind):
                    created = not target.exists()
                    if created:
                        os.rename(out, target)
                        fsync_dir(kind_dir)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if created:
            logger.info("published %s in %s", manifest.version, self.root)
        else:
            logger.info("%s is already in %s (identical files): build discarded", manifest.version, self.root)
        return Publication(info=self._info(kind, target), result=result, created=created)

    def clean(self, kind: str) -> list[Path]:
        """Remove what dead builds and interrupted deletions left in ``kind``; returns what went."""
        kind_dir = self._kind_dir(kind)
        if not kind_dir.is_dir():
            return []
        removed: list[Path] = []
        locks = kind_dir / LOCKS_DIR
        for path in sorted(kind_dir.iterdir()):
            if path.name.startswith(STAGING_PREFIX) and path.is_dir():
                token = path.name[len(STAGING_PREFIX) :]
                if self._owner_alive(locks / token):
                    continue
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        if locks.is_dir():
            for lock in locks.iterdir():
                if not (kind_dir / f"{STAGING_PREFIX}{lock.name}").exists() and not self._owner_alive(lock):
                    with contextlib.suppress(OSError):
                        lock.unlink()
        with self._kind_lock(kind):
            for path in sorted(kind_dir.iterdir()):
                if path.name.startswith(TRASH_PREFIX) or (path.name.startswith(".") and path.name.endswith(".tmp")):
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            path.unlink()
                    removed.append(path)
        if removed:
            logger.info("removed %d leftover(s) of unfinished builds in %s", len(removed), kind_dir)
        return removed

    # -- the active pointer ----------------------------------------------------------------

    def activate(self, ref: str) -> VersionInfo:
        """Make ``ref`` the active version of its kind, after checking every file's checksum.

        Raises ``CorruptArtifactError`` (and changes nothing) when the version's files fail.
        """
        info = self.get(ref)
        self.verify(info)
        with self._kind_lock(info.kind):
            pointer = self.pointer(info.kind)
            if pointer.version == info.version:
                return info
            history = [pointer.version] if pointer.version else []
            history += [v for v in pointer.history if v != info.version and v != pointer.version]
            self._write_pointer(ActivePointer(info.kind, info.version, tuple(history[:MAX_HISTORY]), utc_now()))
        logger.info("activated %s (was %s)", info.version, pointer.version)
        return info

    def rollback(self, kind: str, *, expected: str | None = None) -> VersionInfo:
        """Re-activate the version active before the current one of ``kind``.

        The current version leaves the history, so a second rollback goes one step further back.
        With ``expected``, refuse (changing nothing) unless that is the version a rollback would
        activate: a caller that loaded it first knows the pointer did not move meanwhile.
        """
        with self._kind_lock(kind):
            pointer = self.pointer(kind)
            history = list(pointer.history)
            while history:
                try:
                    target = self.get(history[0])
                    break
                except VersionNotFoundError:
                    history.pop(0)  # garbage-collected since
            else:
                raise NoPreviousVersionError(f"no earlier active {kind} version to roll back to in {self.root}")
            if expected is not None and target.version != expected:
                raise ArtifactError(
                    f"the {kind} pointer moved meanwhile: a rollback would now activate {target.version}"
                )
            self.verify(target)
            self._write_pointer(ActivePointer(kind, target.version, tuple(history[1:]), utc_now()))
        logger.info("rolled %s back from %s to %s", kind, pointer.version, target.version)
        return target

    def verify(self, info: VersionInfo) -> None:
        """Raise ``CorruptArtifactError`` unless the version's files match their checksums."""
        manifest = Manifest.read(info.path, kind=info.kind)
        if manifest.content_id != info.content_id:
            raise CorruptArtifactError(f"{info.path}: manifest lists files of {manifest.version}, not {info.version}")
        manifest.verify(info.path)

    # -- maintenance -----------------------------------------------------------------------

    def gc(self, keep: int, kind: str | None = None, *, dry_run: bool = False) -> list[VersionInfo]:
        """Delete all but the ``keep`` newest versions of each kind; never an active one.

        Also kept: the version a rollback would return to, and versions an active version of any
        kind names as a parent (a reranker's index).
        Deleted versions leave the rollback history. Returns the deleted (or, with ``dry_run``,
        the deletable) versions.
        """
        if keep < 0:
            raise ValueError("keep must be >= 0")
        protected: set[str] = set()
        for name in self.kinds():
            pointer = self.pointer(name)
            protected.update(pointer.history[:1])  # the rollback target
            active = pointer.version
            if active:
                protected.add(active)
                with contextlib.suppress(ArtifactError):
                    parents = self.get(active).manifest.parents.values()
                    protected.update(str(p) for p in parents)
        doomed: list[VersionInfo] = []
        for name in [kind] if kind is not None else self.kinds():
            newest_first = list(reversed(self.versions(name)))
            for position, info in enumerate(newest_first):
                if position < keep or info.version in protected or info.content_id in protected:
                    continue
                doomed.append(info)
        if dry_run:
            return doomed
        for info in doomed:
            with self._kind_lock(info.kind):
                if self.pointer(info.kind).version == info.version:
                    continue  # activated meanwhile
                trash = info.path.parent / f"{TRASH_PREFIX}{info.content_id}-{uuid.uuid4().hex[:8]}"
                os.rename(info.path, trash)
                fsync_dir(info.path.parent)
                shutil.rmtree(trash, ignore_errors=True)
                pointer = self.pointer(info.kind)
                if info.version in pointer.history:
                    history = tuple(v for v in pointer.history if v != info.version)
                    self._write_pointer(ActivePointer(info.kind, pointer.version, history, pointer.updated_at))
            logger.info("deleted %s", info.version)
        return doomed

    def record_metrics(self, ref: str, name: str, values: dict[str, Any]) -> Manifest:
        """Attach offline evaluation results to a version's manifest (see :func:`record_metrics`)."""
        info = self.get(ref)
        with self._kind_lock(info.kind):
            return record_metrics(info.path, name, values)

    def find(self, path: str | Path) -> VersionInfo | None:
        """The version stored at ``path``, if ``path`` is a version directory of this registry."""
        path = Path(path).resolve()
        parent = path.parent
        if parent.parent != self.root.resolve() or not _ID_RE.match(path.name) or not path.is_dir():
            return None
        return self._info(parent.name, path)

    # -- internals -------------------------------------------------------------------------

    def _kind_dir(self, kind: str) -> Path:
        if not _KIND_RE.match(kind):
            raise ValueError(f"invalid artifact kind {kind!r} (lower-case letters, digits and '-')")
        return self.root / kind

    def _info(self, kind: str, path: Path) -> VersionInfo:
        try:
            manifest = Manifest.read(path)
        except ArtifactNotFoundError as exc:
            raise CorruptArtifactError(f"{path}: a registry version without a manifest") from exc
        published_at, sequence = manifest.created_at, 0
        with contextlib.suppress(OSError, ValueError, TypeError, json.JSONDecodeError):
            data = json.loads((path / PUBLISHED_FILE).read_text(encoding="utf-8"))
            published_at, sequence = str(data["published_at"]), int(data["sequence"])
        return VersionInfo(kind, path.name, path, manifest, published_at, sequence)

    def _write_pointer(self, pointer: ActivePointer) -> None:
        write_json_atomic(self._kind_dir(pointer.kind) / ACTIVE_FILE, pointer.to_dict())

    @contextlib.contextmanager
    def _kind_lock(self, kind: str) -> Iterator[None]:
        kind_dir = self._kind_dir(kind)
        kind_dir.mkdir(parents=True, exist_ok=True)
        with open(kind_dir / KIND_LOCK, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _build_lock(self, kind_dir: Path, token: str) -> Iterator[None]:
        """Hold the lock that marks ``.staging-<token>`` as owned by a live build (taken before it exists)."""
        locks = kind_dir / LOCKS_DIR
        locks.mkdir(exist_ok=True)
        path = locks / token
        while True:
            handle = open(path, "a+b")  # noqa: SIM115 - closed in the finally below
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            # A concurrent clean() may have removed the file between open and flock (it took it
            # for an orphan); then the lock we hold names nothing: take a fresh one.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            handle.close()
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            handle.close()

    @staticmethod
    def _owner_alive(lock: Path) -> bool:
        """Whether a live process holds ``lock`` (a missing lock file means no owner)."""
        try:
            handle = open(lock, "rb")  # noqa: SIM115 - closed below, after the probe
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            handle.close()
        return False
