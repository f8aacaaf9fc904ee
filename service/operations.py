"""Wiring of the production half into a server: hot swap, Admin, metrics, access log.

``service/server.py`` calls three functions and otherwise knows nothing of this:

* :func:`prepare` (before the grpc server exists): the serving state, the lifecycle, the metrics,
  the telemetry interceptor; refuses an Admin service on a non-loopback address without a token.
* :func:`install` (once the services are registered): the Admin service, the ``/metrics`` HTTP
  server, the task following the registry pointer.
* :func:`close` (on stop).

It also loads a server's artifacts from a registry (``sleuth serve --registry DIR``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from artifacts import ArtifactNotFoundError
from artifacts.registry import Registry
from retrieval.index import SearchIndex
from retrieval.pipeline import Reranker, Searcher
from service.config import ServerConfig
from service.lifecycle import RERANKER, SEARCH_INDEX, Lifecycle
from service.metrics import (
    MetricsServer,
    ServerMetrics,
    TelemetryInterceptor,
    access_logger,
    configure_access_log,
    metrics_port_for_this_process,
)
from service.security import SecurityConfigError, load_token
from service.serving import encoder_factory
from service.serving_state import ServingState

logger = logging.getLogger(__name__)


class AdminExposedError(SecurityConfigError):
    """The Admin service would listen on a non-loopback address without an auth token."""


@dataclass
class Operations:
    """The lifecycle and observability parts of one server."""

    lifecycle: Lifecycle
    metrics: ServerMetrics
    interceptor: TelemetryInterceptor
    metrics_server: MetricsServer | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def search_state(self) -> ServingState[Searcher]:
        return self.lifecycle.search


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_admin_exposure(config: ServerConfig) -> None:
    """Refuse Admin on a non-loopback address unless a token protects it."""
    if config.admin and config.auth_token_file is None and not is_loopback(config.host):
        raise AdminExposedError(
            f"the Admin service would listen on {config.host} without authentication: "
            "give --auth-token-file, bind a loopback address, or pass --no-admin"
        )


def prepare(config: ServerConfig, searcher: Searcher) -> Operations:
    check_admin_exposure(config)
    if not access_logger.handlers:
        configure_access_log()  # bare JSON lines on stderr
    elif access_logger.level == logging.NOTSET:
        access_logger.setLevel(logging.INFO)
    metrics = ServerMetrics()
    state: ServingState[Searcher] = ServingState(SEARCH_INDEX, searcher, searcher.index.version)
    registry = Registry.open(config.registry) if config.registry is not None else None
    lifecycle = Lifecycle(
        state,
        registry,
        encoder_factory=encoder_factory(config),
        on_swap=lambda kind, outcome: metrics.swaps.labels(kind, outcome).inc(),
    )
    metrics.watch_versions(lifecycle.served)
    return Operations(lifecycle, metrics, TelemetryInterceptor(metrics, log_queries=config.log_queries))


def install(ops: Operations, server: grpc.aio.Server, config: ServerConfig) -> list[str]:
    """Register Admin (unless disabled), start /metrics and the registry follower; the new service names."""
    names: list[str] = []
    if config.admin:
        from service.admin_servicer import ADMIN_SERVICE, AdminServicer
        from service.generated.sleuth.v1 import admin_pb2_grpc

        token = load_token(config.auth_token_file) if config.auth_token_file is not None else None
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(ops.lifecycle, token), server)
        names.append(ADMIN_SERVICE)
    port = metrics_port_for_this_process(config.metrics_port, config.workers)
    if port:
        try:
            ops.metrics_server = ops.metrics.serve_http(port, config.host.strip("[]"))
        except OSError as exc:
            raise SecurityConfigError(f"cannot serve /metrics on port {port}: {exc.strerror or exc}") from exc
    if ops.lifecycle.registry is not None and config.registry_poll_seconds > 0:
        ops.tasks.append(asyncio.get_running_loop().create_task(ops.lifecycle.follow(config.registry_poll_seconds)))
    return names


async def close(ops: Operations) -> None:
    for task in ops.tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if ops.metrics_server is not None:
        await asyncio.to_thread(ops.metrics_server.close)


def registry_index(config: ServerConfig) -> SearchIndex:
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
    return SearchIndex.load(active.path)


def registry_reranker(config: ServerConfig) -> Reranker | None:
    """The registry's active reranker, if the server runs on a registry that has one."""
    if config.registry is None:
        return None
    active = Registry.open(config.registry).active(RERANKER)
    if active is None:
        return None
    from retrieval.rerank import load_reranker

    return load_reranker(active.path)


def registry_active_path(config: ServerConfig, kind: str) -> Path | None:
    """The directory of the registry's active ``kind`` (e.g. "kb", "linker"), if any."""
    if config.registry is None:
        return None
    active = Registry.open(config.registry).active(kind)
    return active.path if active is not None else None
