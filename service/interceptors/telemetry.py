"""Telemetry of every call: its counters and one structured JSON access-log line a request.

The access log is the logger ``sleuth.access``: one JSON object a request, with the request id
(the client's ``x-request-id`` metadata, or a fresh one, echoed back in the trailing metadata),
the RPC, the version that served it, latency, status code, and result counts. The query text is
never logged unless the server runs with ``--log-queries``. The counters are those of
:class:`~service.serving.metrics.ServerMetrics`.

Servicers report what only they know through :func:`note_search` / :func:`note_linking`: they find
the current call's record in a context variable set by :class:`TelemetryInterceptor`, and do
nothing when there is none.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from service.interceptors.base import Continuation
from service.serving.metrics import ServerMetrics

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("sleuth.access")

UNLOGGED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
REQUEST_ID_KEY = "x-request-id"
MAX_LOGGED_QUERY_CHARS = 512
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass
class CallRecord:
    """What the interceptor and the servicer learn about one call (mutable: filled as it runs)."""

    request_id: str
    rpc: str
    versions: set[str] = field(default_factory=set)
    results: int = 0
    zero_results: int = 0
    mentions: int = 0
    nil: int = 0
    arms: set[str] = field(default_factory=set)  # "experiment/arm" of the searches it served


_CURRENT: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("sleuth_call", default=None)
_ACTIVE: contextvars.ContextVar[ServerMetrics | None] = contextvars.ContextVar("sleuth_metrics", default=None)


def note_search(version: str, results: Sequence[Any]) -> None:
    """Record the version that served this call and its results (``SearchResult``s)."""
    call, metrics = _CURRENT.get(), _ACTIVE.get()
    if call is None or metrics is None:
        return
    call.versions.add(version)
    for result in results:
        call.results += 1
        metrics.search_results.inc()
        if not result.hits:
            call.zero_results += 1
            metrics.zero_results.inc()
        metrics.observe_stages(result.timings_ms)


def note_linking(version: str, mentions: int, nil: int, timings_ms: dict[str, float] | None = None) -> None:
    """Record a linking call: its version, how many mentions it linked, how many were NIL, stage times."""
    call, metrics = _CURRENT.get(), _ACTIVE.get()
    if call is None or metrics is None:
        return
    call.versions.add(version)
    call.mentions += mentions
    call.nil += nil
    metrics.link_mentions.inc(mentions)
    metrics.link_nil.inc(nil)
    metrics.observe_stages(timings_ms or {})


def current_request_id() -> str | None:
    """The id of the RPC being served (set by :class:`TelemetryInterceptor`), if any."""
    call = _CURRENT.get()
    return call.request_id if call is not None else None


def note_arm(experiment: str, arm: str) -> None:
    """Record the experiment arm that served the current call (for its access-log line)."""
    call = _CURRENT.get()
    if call is not None and experiment:
        call.arms.add(f"{experiment}/{arm}")


def _request_id(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            if _REQUEST_ID_RE.match(text):
                return text
    return uuid.uuid4().hex[:16]


def _queries(request: Any) -> Any:
    """The query text(s) of a request, for ``--log-queries`` (cut to a bounded length)."""

    def cut(text: str) -> str:
        return text[:MAX_LOGGED_QUERY_CHARS]

    for name in ("query", "text"):
        value = getattr(request, name, None)
        if isinstance(value, str):
            return cut(value)
    items = getattr(request, "requests", None)
    if items is not None:
        return [cut(getattr(item, "query", "")) for item in items]
    return None


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Counts, times and logs every unary RPC (health and reflection are counted, not logged).

    Put it first in the interceptor chain so that refusals of later interceptors (authentication,
    malformed requests) are counted too.
    """

    def __init__(self, metrics: ServerMetrics, *, log_queries: bool = False) -> None:
        self.metrics = metrics
        self.log_queries = log_queries

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return handler
        method = handler_call_details.method
        rpc = method.lstrip("/")
        logged = not method.startswith(UNLOGGED_PREFIXES)
        request_id = _request_id(handler_call_details.invocation_metadata)
        inner = handler.unary_unary
        metrics = self.metrics

        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = CallRecord(request_id=request_id, rpc=rpc)
            call_token, metrics_token = _CURRENT.set(call), _ACTIVE.set(metrics)
            started = time.perf_counter()
            failed: BaseException | None = None
            if logged:
                context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            try:
                return await inner(request, context)
            except BaseException as exc:
                failed = exc
                raise
            finally:
                _CURRENT.reset(call_token)
                _ACTIVE.reset(metrics_token)
                elapsed = time.perf_counter() - started
                code = context.code()
                if code is None:
                    code = grpc.StatusCode.UNKNOWN if failed is not None else grpc.StatusCode.OK
                name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                metrics.requests.labels(rpc, name).inc()
                metrics.latency.labels(rpc).observe(elapsed)
                if name != "OK":
                    metrics.errors.labels(rpc, name).inc()
                if logged:
                    self._log(call, request, name, elapsed)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _log(self, call: CallRecord, request: Any, code: str, elapsed: float) -> None:
        if not access_logger.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "request_id": call.request_id,
            "rpc": call.rpc,
            "status": code,
            "latency_ms": round(elapsed * 1000, 3),
            "version": ",".join(sorted(call.versions)) or None,
        }
        if call.results:
            line["results"] = call.results
            line["zero_results"] = call.zero_results
        if call.arms:
            line["arm"] = ",".join(sorted(call.arms))
        if call.mentions:
            line["mentions"] = call.mentions
            line["nil"] = call.nil
        if self.log_queries:
            line["query"] = _queries(request)
        access_logger.info(json.dumps(line, ensure_ascii=False))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each line (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_access_log(stream: Any = None) -> None:
    """Write the access log as bare JSON lines (no timestamp prefix) to ``stream`` (default stderr)."""
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_logger.handlers[:] = [handler]
    access_logger.setLevel(logging.INFO)
    access_logger.propagate = False
