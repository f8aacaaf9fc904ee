"""The server builder: served objects -> a bound gRPC server with every service, health and reflection.

Kept apart, as in grpc's examples: :func:`~service.serving.loading.load_services` (files ->
objects), :func:`create_server` (objects -> a :class:`RunningServer`: bound, unstarted, with its
port) and :func:`serve` (run until SIGINT/SIGTERM, then stop gracefully). Tests call
``create_server`` on port 0.

The front end is the same whatever serves behind it: the servicers call the plain objects in
:class:`~service.serving.loading.Services`, so a backend that runs elsewhere (another process,
shards of an index) plugs in there, not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from artifacts.registry import Registry
from retrieval.drift import DriftMonitor
from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import (
    admin_pb2_grpc,
    feedback_pb2,
    feedback_pb2_grpc,
    linking_pb2,
    linking_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from service.interceptors.chain import interceptor_chain
from service.interceptors.drain import HandlerTasks
from service.interceptors.telemetry import TelemetryInterceptor, access_logger, configure_access_log
from service.mlops.experiments import ExperimentConfigError, ExperimentSource
from service.mlops.feedback import FeedbackLog
from service.security import SecurityConfigError, check_admin_exposure, load_token, server_credentials
from service.servicers.admin import ADMIN_SERVICE, AdminServicer
from service.servicers.feedback import FeedbackServicer
from service.servicers.linking import LinkingServicer
from service.servicers.search import SearchServicer
from service.serving.lifecycle import SEARCH_INDEX, Lifecycle
from service.serving.linker import swap_kb, swap_model
from service.serving.loading import Services, StartupError, arm_loader
from service.serving.metrics import MetricsServer, ServerMetrics, metrics_port_for_this_process
from service.serving.online import OnlineCollector, OnlineLoop
from service.serving.runner import SearchRunner, encoder_factory, runtime_encoder_factory
from service.serving.state import ServingState

logger = logging.getLogger(__name__)

SEARCH_SERVICE = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
FEEDBACK_SERVICE = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name
LINKING_SERVICE = linking_pb2.DESCRIPTOR.services_by_name["LinkingService"].full_name

HANDLER_DRAIN_SECONDS = 5.0
"""How long :meth:`RunningServer.stop` waits, once gRPC has stopped, for call handlers to return."""


@dataclass(frozen=True)
class RunningServer:
    """One built server and the parts of it that its owner (``serve``, a test) starts, inspects and stops.

    The fields are fixed once built; the objects behind them (the runner's queues, the lifecycle's
    versions, the metrics' counters) change while it serves.
    """

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    handler_tasks: HandlerTasks
    executor: ThreadPoolExecutor
    runner: SearchRunner
    lifecycle: Lifecycle
    metrics: ServerMetrics
    online: OnlineLoop
    feedback: FeedbackLog | None = None
    metrics_server: MetricsServer | None = None
    tasks: tuple[asyncio.Task[Any], ...] = field(default=())

    @property
    def search_state(self) -> ServingState[Searcher]:
        """What the search service serves now (swapped by Activate/Rollback)."""
        return self.lifecycle.search

    async def start(self) -> None:
        """Start answering calls."""
        await self.server.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds, then free the workers."""
        await self.server.stop(grace)
        # Core is done with every call, but their handler tasks may still be returning: let them, before
        # the runner and executor they use are closed and before the caller may tear the loop down.
        await self.handler_tasks.wait(HANDLER_DRAIN_SECONDS)
        await self.runner.aclose()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.close)
        if self.feedback is not None:
            self.feedback.close()
        self.executor.shutdown(wait=grace is not None and grace > 0)


def grpc_server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """Channel options of the server: explicit message size limits, SO_REUSEPORT for workers.

    SO_REUSEPORT is on only with ``workers > 1``: a single server should fail loudly when its port
    is taken, not silently share it with whatever else is listening there.
    """
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
        # Idle clients are told to reconnect eventually, so SO_REUSEPORT keeps spreading load.
        ("grpc.max_connection_age_ms", 10 * 60 * 1000),
        ("grpc.max_connection_age_grace_ms", 30 * 1000),
    ]


def add_port(server: grpc.aio.Server, config: ServerConfig) -> int:
    """Bind ``config.address``, with TLS when a certificate and key are configured; the bound port."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise SecurityConfigError("--tls-cert and --tls-key go together")
    if config.tls_cert is not None and config.tls_key is not None:
        port = server.add_secure_port(config.address, server_credentials(config.tls_cert, config.tls_key))
    else:
        port = server.add_insecure_port(config.address)
    return port


def build_online(config: ServerConfig) -> OnlineLoop:
    """The experiment source (if configured) and drift monitoring of one server."""
    try:
        experiments = ExperimentSource(config.experiment) if config.experiment is not None else None
    except ExperimentConfigError as exc:
        raise StartupError(str(exc)) from exc
    return OnlineLoop(experiments, drift_threshold=config.drift_threshold, arm_loader=arm_loader(config))


def _access_log() -> None:
    if not access_logger.handlers:
        configure_access_log()  # bare JSON lines on stderr
    elif access_logger.level == logging.NOTSET:
        access_logger.setLevel(logging.INFO)


async def create_server(config: ServerConfig, services: Services) -> RunningServer:
    """Build a server with every service registered and bind it; returns it unstarted, with its port."""
    check_admin_exposure(config)
    _access_log()
    metrics = ServerMetrics()
    release = services.on_search_release

    def release_index(version: str, searcher: Searcher) -> None:
        # A reranker swap keeps the index: release its resources only when no live searcher uses it.
        if release is not None and all(s.index is not searcher.index for s in search_state.live_values()):
            release(version, searcher)

    search_state: ServingState[Searcher] = ServingState(
        SEARCH_INDEX, services.searcher, services.searcher.index.version, on_release=release_index
    )
    registry = Registry.open(config.registry) if config.registry is not None else None
    lifecycle = Lifecycle(
        search_state,
        registry,
        encoder_factory=encoder_factory(config),
        on_swap=lambda kind, outcome: metrics.swaps.labels(kind, outcome).inc(),
        index_loader=services.index_loader,
    )
    metrics.watch_versions(lifecycle.served)
    handler_tasks = HandlerTasks()
    telemetry = TelemetryInterceptor(metrics, log_queries=config.log_queries)
    server = grpc.aio.server(
        options=grpc_server_options(config), interceptors=interceptor_chain(config, handler_tasks, telemetry)
    )
    executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="sleuth")
    runner = SearchRunner.from_config(executor, config)
    online = build_online(config)
    metrics.registry.register(OnlineCollector(online))
    search_pb2_grpc.add_SearchServiceServicer_to_server(SearchServicer(search_state, executor, runner, online), server)
    service_names = [SEARCH_SERVICE]
    feedback = FeedbackLog(config.feedback_db) if config.feedback_db is not None else None
    if feedback is not None:
        feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(FeedbackServicer(feedback, executor), server)
        service_names.append(FEEDBACK_SERVICE)
    if services.linker is not None:
        # Always a monitor (an empty reference watches nothing): a model swapped in later may bring one.
        link_drift = DriftMonitor(services.linker.drift_reference)
        online.add_monitor(link_drift)
        linker_state = ServingState("linker", services.linker, services.linker.model_version)
        swap = functools.partial(swap_model, load_encoder=runtime_encoder_factory(config))
        lifecycle.register("linker", linker_state, swap, lambda loaded: loaded.model_version)
        lifecycle.register("kb", linker_state, swap_kb, lambda loaded: loaded.kb_version)
        linking_pb2_grpc.add_LinkingServiceServicer_to_server(
            LinkingServicer(linker_state, executor, link_drift), server
        )
        service_names.append(LINKING_SERVICE)
    if config.admin:
        token = load_token(config.auth_token_file) if config.auth_token_file is not None else None
        admin_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(lifecycle, token), server)
        service_names.append(ADMIN_SERVICE)
    metrics_port = metrics_port_for_this_process(config.metrics_port, config.workers)
    metrics_server = None
    if metrics_port:
        try:
            metrics_server = metrics.serve_http(metrics_port, config.host.strip("[]"))
        except OSError as exc:
            raise SecurityConfigError(f"cannot serve /metrics on port {metrics_port}: {exc.strerror or exc}") from exc
    tasks: tuple[asyncio.Task[Any], ...] = ()
    if lifecycle.registry is not None and config.registry_poll_seconds > 0:
        tasks = (asyncio.get_running_loop().create_task(lifecycle.follow(config.registry_poll_seconds)),)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names += [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(service_names, server)
    try:
        port = add_port(server, config)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {config.address}: {exc}") from exc
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(
        server=server,
        port=port,
        health=health_servicer,
        handler_tasks=handler_tasks,
        executor=executor,
        runner=runner,
        lifecycle=lifecycle,
        metrics=metrics,
        online=online,
        feedback=feedback,
        metrics_server=metrics_server,
        tasks=tasks,
    )


def ready_message(config: ServerConfig, running: RunningServer, seconds: float | None = None) -> str:
    """The line a server logs once it accepts calls: its address, what it serves and how long it took."""
    served = ", ".join(running.lifecycle.versions().values())
    took = f" (started in {seconds:.1f} s)" if seconds is not None else ""
    return f"ready: serving {served} on {config.host}:{running.port}{took}"


async def serve(
    config: ServerConfig,
    services: Services,
    *,
    started: float | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (or until ``stop`` is set); then refuse new calls and finish in-flight ones.

    ``started`` (a :func:`time.perf_counter` reading from before loading) makes the ready line say
    how long start-up took.
    """
    running = await create_server(config, services)
    await running.start()
    seconds = time.perf_counter() - started if started is not None else None
    logger.info("%s", ready_message(config, running, seconds))
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down (grace %.1f s)", config.grace_seconds)
    await running.health.enter_graceful_shutdown()
    await running.stop(config.grace_seconds)
    logger.info("stopped")
