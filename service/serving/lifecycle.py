"""Version lifecycle of a running server: activate, roll back, follow the registry, report status.

:class:`Lifecycle` owns what the server serves (a :class:`ServingState` per kind) and, when the
server runs on a registry (``sleuth serve --registry DIR``), changes it:

* :meth:`Lifecycle.activate` loads a registry version (every file's checksum verified), warms it
  up, moves the registry's active pointer, then swaps it in; in-flight requests finish on the
  version they started with (see :mod:`service.serving.state`).
* :meth:`Lifecycle.rollback` does the same with the version active before.
* :meth:`Lifecycle.follow` polls the registry's pointer and swaps when it moved without this
  process: ``sleuth registry activate`` run without ``--target``, or the Admin RPC answered by
  another worker process of ``--workers N``.

Loading happens before anything changes, so a version that fails to load (corrupt files, another
encoder that is not available) leaves the server and the pointer as they were.

Kinds it knows: ``search-index`` (a new ``Searcher`` on the new index; the encoder is reused when
the index was built with the same weights) and ``reranker`` (the same index with a new reranker).
Other services can add theirs with :meth:`Lifecycle.register`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifacts import ArtifactError, IncompatibleArtifactError
from artifacts.registry import Registry, VersionInfo
from retrieval.dense import Encoder
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher
from service.serving.state import ServingState, SlotStatus

logger = logging.getLogger(__name__)

SEARCH_INDEX = "search-index"
RERANKER = "reranker"

EncoderFactory = Callable[[str], Encoder]
Loader = Callable[[Path, Any], Any]
"""``loader(version_dir, current_value) -> new_value``: runs on a worker thread."""
VersionOf = Callable[[Any], str | None]


@dataclass(frozen=True)
class SwapResult:
    kind: str
    version: str
    previous_version: str
    load_ms: float


@dataclass(frozen=True)
class LifecycleStatus:
    served: tuple[SlotStatus, ...]
    registry: str | None
    registry_active: dict[str, str]
    uptime_seconds: float
    swaps: int


@dataclass(frozen=True)
class _Binding:
    state: ServingState[Any]
    loader: Loader
    version_of: VersionOf  # the version of this kind inside the state's current value


class LifecycleError(ArtifactError):
    """A lifecycle operation cannot run here (no registry, an unknown kind)."""


def default_encoder_factory(name: str) -> Encoder:
    from retrieval import load_encoder

    return load_encoder(name, "torch")


def warm(searcher: Searcher) -> None:
    """One request per mode, so the first client request on a new version pays no lazy start-up."""
    from service.serving.runner import warm_up

    warm_up(searcher)


def searcher_version(searcher: Searcher) -> str:
    return searcher.index.version


def reranker_version(searcher: Searcher) -> str | None:
    return searcher.reranker.version if searcher.reranker is not None else None


def load_search_index(
    path: Path,
    current: Searcher,
    encoder_factory: EncoderFactory,
    index_loader: Callable[[Path], SearchIndex] = SearchIndex.load,
) -> Searcher:
    """A Searcher on the index at ``path``, keeping the current reranker (and encoder when it fits)."""
    index = index_loader(path)  # verifies every file's checksum
    wanted = index.encoder_info.get("checksum")
    if wanted is None or wanted == current.encoder.checksum:
        encoder = current.encoder
    else:
        encoder = encoder_factory(index.encoder_info["name"])
        if encoder.checksum != wanted:
            raise IncompatibleArtifactError(
                f"{index.version} needs encoder weights {wanted}; {index.encoder_info['name']!r} has {encoder.checksum}"
            )
    searcher = Searcher(index, encoder, current.reranker)
    warm(searcher)
    return searcher


def load_reranker_version(path: Path, current: Searcher) -> Searcher:
    from retrieval.rerankers import load_reranker

    return Searcher(current.index, current.encoder, load_reranker(path))


class Lifecycle:
    """What a server serves and how it changes. Admin operations run one at a time."""

    def __init__(
        self,
        search: ServingState[Searcher],
        registry: Registry | None = None,
        *,
        encoder_factory: EncoderFactory = default_encoder_factory,
        on_swap: Callable[[str, str], None] | None = None,
        index_loader: Callable[[Path], SearchIndex] = SearchIndex.load,
    ) -> None:
        self.search = search
        self.registry = registry
        self._bindings: dict[str, _Binding] = {
            SEARCH_INDEX: _Binding(
                search, lambda p, cur: load_search_index(p, cur, encoder_factory, index_loader), searcher_version
            ),
            RERANKER: _Binding(search, load_reranker_version, reranker_version),
        }
        self._lock = asyncio.Lock()
        self._started = time.monotonic()
        self._on_swap = on_swap
        self.swaps = 0

    def register(self, kind: str, state: ServingState[Any], loader: Loader, version_of: VersionOf) -> None:
        """Let Activate/Rollback swap ``kind`` (e.g. the linker's KB) in ``state`` with ``loader``."""
        self._bindings[kind] = _Binding(state, loader, version_of)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._bindings)

    def states(self) -> list[ServingState[Any]]:
        unique: dict[int, ServingState[Any]] = {}
        for binding in self._bindings.values():
            unique.setdefault(id(binding.state), binding.state)
        return list(unique.values())

    def served(self) -> list[SlotStatus]:
        return [slot for state in self.states() for slot in state.status()]

    def versions(self) -> dict[str, str]:
        """The version of each kind served now, by kind (a kind with none, e.g. no reranker, is left out)."""
        versions = {}
        for kind, binding in sorted(self._bindings.items()):
            version = binding.version_of(binding.state.current)
            if version:
                versions[kind] = version
        return versions

    # -- operations ------------------------------------------------------------------------

    async def activate(self, ref: str) -> SwapResult:
        registry = self._need_registry()
        async with self._lock:
            info = await asyncio.to_thread(registry.get, ref)
            binding = self._binding(info.kind)
            return await self._swap(binding, info, lambda: registry.activate(info.version))

    async def rollback(self, kind: str = SEARCH_INDEX) -> SwapResult:
        registry = self._need_registry()
        async with self._lock:
            binding = self._binding(kind)
            info = await asyncio.to_thread(registry.previous, kind)
            return await self._swap(binding, info, lambda: registry.rollback(kind, expected=info.version))

    async def sync(self) -> list[SwapResult]:
        """Serve the registry's active version of every kind this server serves, where they differ."""
        if self.registry is None:
            return []
        done = []
        async with self._lock:
            for kind, binding in sorted(self._bindings.items()):
                pointer = await asyncio.to_thread(self.registry.pointer, kind)
                if pointer.version is None or pointer.version == binding.version_of(binding.state.current):
                    continue
                info = await asyncio.to_thread(self.registry.get, pointer.version)
                logger.info("registry pointer of %s moved to %s: following", kind, info.version)
                done.append(await self._swap(binding, info, None))
        return done

    async def follow(self, interval: float) -> None:
        """Call :meth:`sync` every ``interval`` seconds until cancelled (errors are logged, not raised)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except ArtifactError as exc:
                logger.error("cannot follow the registry pointer: %s", exc)

    def status(self) -> LifecycleStatus:
        active: dict[str, str] = {}
        if self.registry is not None:
            for kind in self.registry.kinds():
                with contextlib.suppress(ArtifactError):
                    version = self.registry.pointer(kind).version
                    if version:
                        active[kind] = version
        return LifecycleStatus(
            served=tuple(self.served()),
            registry=str(self.registry.root) if self.registry is not None else None,
            registry_active=active,
            uptime_seconds=time.monotonic() - self._started,
            swaps=self.swaps,
        )

    # -- internals -------------------------------------------------------------------------

    async def _swap(self, binding: _Binding, info: VersionInfo, commit: Callable[[], Any] | None) -> SwapResult:
        started = time.perf_counter()
        previous = binding.version_of(binding.state.current) or ""
        try:
            value = await asyncio.to_thread(binding.loader, info.path, binding.state.current)
            if commit is not None:
                await asyncio.to_thread(commit)  # the registry pointer moves only once the version loaded
        except Exception:
            self._count(info.kind, "failed")
            raise
        binding.state.swap(value, searcher_label(binding, value))
        self.swaps += 1
        self._count(info.kind, "ok")
        load_ms = (time.perf_counter() - started) * 1000
        logger.info("%s: %s -> %s (loaded in %.0f ms)", info.kind, previous or "-", info.version, load_ms)
        return SwapResult(info.kind, info.version, previous, load_ms)

    def _count(self, kind: str, outcome: str) -> None:
        if self._on_swap is not None:
            self._on_swap(kind, outcome)

    def _binding(self, kind: str) -> _Binding:
        if kind not in self._bindings:
            raise LifecycleError(f"this server cannot swap a {kind!r}; it serves {', '.join(self.kinds)}")
        return self._bindings[kind]

    def _need_registry(self) -> Registry:
        if self.registry is None:
            raise LifecycleError("this server was not started with --registry: it has no versions to switch to")
        return self.registry


def searcher_label(binding: _Binding, value: Any) -> str:
    """The label a state's slot carries: the search index version for a Searcher, else the kind's."""
    if isinstance(value, Searcher):
        return searcher_version(value)
    return binding.version_of(value) or "unknown"
