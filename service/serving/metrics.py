"""Prometheus metrics of one server, on their own port.

One :class:`prometheus_client.CollectorRegistry` per server, so several servers in one process
(as in the tests) do not share counters:

* ``sleuth_requests_total{rpc, code}`` and ``sleuth_request_errors_total{rpc, code}`` (code != OK)
* ``sleuth_request_latency_seconds{rpc}``: histogram of whole-call latency
* ``sleuth_stage_latency_seconds{stage}``: histogram per pipeline stage; search reports bm25,
  dense, fuse, rerank (``SearchResult.timings_ms``), linking detect, candidates, disambiguate
* ``sleuth_search_results_total`` / ``sleuth_search_zero_results_total``: zero-result rate is
  ``rate(zero) / rate(results)``
* ``sleuth_link_mentions_total`` / ``sleuth_link_nil_total``: NIL rate likewise
* ``sleuth_active_version_info{kind, version}`` = 1 for what is served now, and
  ``sleuth_version_inflight_requests{kind, version, state}`` (state "serving" or "draining")
* ``sleuth_swaps_total{kind, outcome}``: activations and rollbacks, "ok" or "failed"

The per-call counters are filled by :mod:`service.interceptors.telemetry`.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ServerMetrics:
    """The metrics of one server, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "sleuth_requests", "RPCs handled, by method and status code", ["rpc", "code"], registry=r
        )
        self.errors = Counter(
            "sleuth_request_errors", "RPCs that did not end OK, by status code", ["rpc", "code"], registry=r
        )
        self.latency = Histogram(
            "sleuth_request_latency_seconds", "Whole-call latency", ["rpc"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.stage_latency = Histogram(
            "sleuth_stage_latency_seconds",
            "Latency of one pipeline stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.search_results = Counter("sleuth_search_results", "Search results returned (one per query)", registry=r)
        self.zero_results = Counter("sleuth_search_zero_results", "Search results with no hit", registry=r)
        self.link_mentions = Counter("sleuth_link_mentions", "Mentions linked", registry=r)
        self.link_nil = Counter("sleuth_link_nil", "Mentions answered NIL (no entity)", registry=r)
        self.swaps = Counter("sleuth_swaps", "Version swaps, by kind and outcome", ["kind", "outcome"], registry=r)

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stage_latency.labels(stage).observe(ms / 1000.0)

    def watch_versions(self, source: Callable[[], Iterable[Any]]) -> None:
        """Export served/draining versions; ``source()`` yields objects with kind, version, inflight, draining."""
        self.registry.register(_VersionCollector(source))

    def serve_http(self, port: int, host: str = "localhost") -> MetricsServer:
        """Expose ``/metrics`` on ``host:port`` (a daemon thread); stop it with ``.close()``."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        logger.info("metrics on http://%s:%d/metrics", host, server.server_port)
        return MetricsServer(server, thread)


class MetricsServer:
    """The running ``/metrics`` HTTP server."""

    def __init__(self, server: Any, thread: Any) -> None:
        self._server = server
        self._thread = thread
        self.port = int(server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _VersionCollector(Collector):
    def __init__(self, source: Callable[[], Iterable[Any]]) -> None:
        self._source = source

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        info = GaugeMetricFamily(
            "sleuth_active_version_info", "The version served now, per kind", labels=["kind", "version"]
        )
        inflight = GaugeMetricFamily(
            "sleuth_version_inflight_requests",
            "Requests in flight per served or draining version",
            labels=["kind", "version", "state"],
        )
        for slot in self._source():
            if not slot.draining:
                info.add_metric([slot.kind, slot.version], 1)
            inflight.add_metric([slot.kind, slot.version, "draining" if slot.draining else "serving"], slot.inflight)
        yield info
        yield inflight


def metrics_port_for_this_process(port: int, workers: int) -> int:
    """``port``, plus the worker number when ``--workers N`` runs several processes.

    Each worker process has its own counters, so each exposes them on its own port
    (``port``, ``port+1``, ...); workers are named ``sleuth-worker-N`` by :mod:`service.serving.workers`.
    """
    if port == 0 or workers <= 1:
        return port
    match = re.fullmatch(r"sleuth-worker-(\d+)", multiprocessing.current_process().name)
    return port + int(match.group(1)) if match else port
