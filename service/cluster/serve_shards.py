"""Index shards as Ray Serve deployments, and index versions as sets of them.

One Serve application per (version, shard), named ``sleuth:<version>:<shard>``, whose single
deployment runs ``replicas`` copies of :class:`ShardReplica`. A replica loads its shard once, in its
constructor, with the ``loader`` it was given (``loader(directory)``: the sharded index's own
``load`` classmethod in production, a test shard in the tests), and answers ``top`` (both retrievers
in one call), ``bm25_top`` and ``dense_top``.

No Serve proxy is started (``proxy_location="Disabled"``): Serve's own gRPC proxy has no health
service, TLS or interceptors, so Sleuth keeps its grpc.aio front end and calls the shards through
:class:`ServeShardClient`, a thin async wrapper of a deployment handle, from
:class:`~service.cluster.front.QueryFront`.

Versions: :func:`deploy_version` deploys a version's shards beside the running ones and returns
their :class:`~service.cluster.front.ShardSet`; the front switches to it with ``use`` (atomic: each
request reads the set once), waits for the old version's requests with ``drain``, then
:func:`retire_version` deletes the old applications. No response mixes versions.

Entity linking scales the same way (:mod:`service.cluster.serve_linker`): one application
``sleuth:<model>:linker`` of N replicas that each open the KB and the model; it is not sharded, since
the KB fits one process. :func:`deployed_versions` leaves it out.

Example:
    >>> shard_set = deploy_version("v2", {"s0": "/idx/v2/s0", "s1": "/idx/v2/s1"}, ShardIndex.load)  # doctest: +SKIP
    >>> previous = front.use(shard_set)  # doctest: +SKIP
    >>> await front.drain(previous.version, timeout=30)  # doctest: +SKIP
    >>> retire_version(previous.version)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from service.cluster.errors import ClusterError, ShardSetError
from service.cluster.front import ShardAnswer, ShardBackend, ShardSet, answer
from service.cluster.shard_batching import ShardRequest

logger = logging.getLogger(__name__)

ShardLoader = Callable[[str], ShardBackend]
"""Opens a shard directory in a replica; must pickle (a module-level function or classmethod)."""
APP_PREFIX = "sleuth"
LINKER_APP = "linker"
"""The last part of the linker's application name (``sleuth:<model>:linker``), never a shard name."""
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")  # '@': registry versions are kind@content-id


class ShardDeployError(ClusterError):
    """A version's shards could not be deployed; the message names the shard and its directory."""


@dataclass(frozen=True)
class ShardDeploymentConfig:
    """Replicas per shard and what each reserves.

    ``cpus_per_replica`` is a scheduling reservation, kept fractional so that replicas of several
    shards (and the front) fit on a small node; a shard's search is one thread per request.
    """

    replicas: int = 2
    cpus_per_replica: float = 0.25
    max_ongoing_requests: int = 32
    constructor_retries: int = 2

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ShardSetError(f"replicas must be at least 1, got {self.replicas}")
        if not 0 < self.cpus_per_replica <= 64:
            raise ShardSetError(f"cpus_per_replica must be within (0, 64], got {self.cpus_per_replica}")
        if self.max_ongoing_requests < 1 or self.constructor_retries < 1:
            raise ShardSetError("max_ongoing_requests and constructor_retries must be at least 1")


class ShardReplica:
    """What one Serve replica of a shard runs: the shard, loaded once in the constructor."""

    def __init__(self, loader: ShardLoader, directory: str, name: str) -> None:
        self.name = name
        self._shard = loader(directory)
        logger.info("shard %s loaded from %s (pid %d)", name, directory, os.getpid())

    def top(self, query: str | None, vector: np.ndarray | None, k: int) -> ShardAnswer:
        return answer(self._shard, query, vector, k)

    def top_batch(self, requests: list[ShardRequest]) -> list[ShardAnswer]:
        """``top`` for each request of a batch, in order (one call instead of one per request)."""
        return [answer(self._shard, r.query, r.vector, r.k) for r in requests]

    def bm25_top(self, query: str, k: int) -> list[tuple[str, float]]:
        return self._shard.bm25_top(query, k)

    def dense_top(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        return self._shard.dense_top(vector, k)

    def call(self, verb: str, *args: Any) -> Any:
        """One :class:`retrieval.shards.IndexShard` verb on the loaded shard (what a ``RemoteShard`` asks)."""
        if verb not in SHARD_VERBS:
            raise ValueError(f"unknown shard verb {verb!r} (one of {', '.join(sorted(SHARD_VERBS))})")
        return getattr(self._shard, verb)(*args)

    def call_many(self, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """``call`` for each ``(verb, args)``, in order: the requests that queued for this shard, in one RPC."""
        return [self.call(verb, *args) for verb, args in calls]

    def pid(self) -> int:
        """The replica's process id (fault tests kill replicas by it)."""
        return os.getpid()


SHARD_VERBS = frozenset({"bm25_top", "dense_top", "bm25_contributions", "document_frequencies", "dense_vectors"})


ShardDeployment = serve.deployment(name="shard")(ShardReplica)


class ServeShardClient:
    """A :class:`~service.cluster.front.ShardClient` over a Serve deployment handle."""

    def __init__(self, name: str, handle: Any, app: str) -> None:
        self.name = name
        self.app = app
        self._handle = handle

    async def top(self, query: str | None, vector: np.ndarray | None, k: int) -> ShardAnswer:
        result: ShardAnswer = await self._handle.top.remote(query, vector, k)
        return result

    async def top_batch(self, requests: list[ShardRequest]) -> list[ShardAnswer]:
        results: list[ShardAnswer] = await self._handle.top_batch.remote(requests)
        return results


def app_name(version: str, shard: str) -> str:
    """The Serve application of one shard of one version."""
    return f"{APP_PREFIX}:{version}:{shard}"


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise ShardSetError(f"{kind} name {name!r}: use letters, digits, '.', '_', '@' or '-' (at most 64)")


def ensure_serve() -> None:
    """Start Serve on the connected cluster without HTTP or gRPC proxies (idempotent)."""
    serve.start(proxy_location="Disabled")


def deployed_versions() -> dict[str, list[str]]:
    """The versions whose shard applications exist on the cluster, with their shard names."""
    versions: dict[str, list[str]] = {}
    for app in serve.status().applications:
        prefix, _, rest = app.partition(":")
        version, _, shard = rest.partition(":")
        if prefix == APP_PREFIX and version and shard and shard != LINKER_APP:
            versions.setdefault(version, []).append(shard)
    return {version: sorted(shards) for version, shards in versions.items()}


def deploy_version(
    version: str,
    shard_dirs: Mapping[str, str | Path],
    loader: ShardLoader,
    *,
    config: ShardDeploymentConfig | None = None,
) -> ShardSet:
    """Deploy one Serve application per shard of ``version`` and return their shard set.

    The shards start together and the call returns once every replica has loaded its shard. If any
    shard fails to load, all of the version's applications are deleted and :class:`ShardDeployError`
    names the failed shards and directories; the running version is never touched.
    """
    config = config or ShardDeploymentConfig()
    _check_name("version", version)
    if not shard_dirs:
        raise ShardSetError(f"version {version!r}: no shards to deploy")
    for shard in shard_dirs:
        _check_name("shard", shard)
        if shard == LINKER_APP:
            raise ShardSetError(f"shard name {shard!r} is the linker's application; name the shard otherwise")
    ensure_serve()
    if version in deployed_versions():
        raise ShardSetError(f"version {version!r} is already deployed; retire it first or use a new name")
    targets = []
    for shard, directory in shard_dirs.items():
        bound = ShardDeployment.options(
            num_replicas=config.replicas,
            ray_actor_options={"num_cpus": config.cpus_per_replica},
            max_ongoing_requests=config.max_ongoing_requests,
            max_constructor_retry_count=config.constructor_retries,
        ).bind(loader, str(directory), shard)
        targets.append(serve.RunTarget(bound, name=app_name(version, shard), route_prefix=None))
    try:
        # All shards start together; the call returns when every application is running.
        handles = serve.run_many(targets)
    except Exception as exc:  # Serve reports a failed constructor as a RuntimeError with the replica's traceback
        failed = _failed_shards(version)
        for target in targets:
            serve.delete(target.name, _blocking=False)
        what = "; ".join(f"shard {shard!r} from {shard_dirs[shard]}: {reason}" for shard, reason in failed.items())
        reason = what or next(iter(str(exc).splitlines()), type(exc).__name__)
        raise ShardDeployError(f"version {version!r}: {reason}") from exc
    clients = [
        ServeShardClient(shard, handle, app_name(version, shard))
        for shard, handle in zip(shard_dirs, handles, strict=True)
    ]
    logger.info("deployed version %s: %d shard(s) x %d replica(s)", version, len(clients), config.replicas)
    return ShardSet(version, tuple(clients))


def attach_version(version: str) -> ShardSet:
    """The shard set of an already deployed ``version`` (a front process that did not deploy it attaches so)."""
    _check_name("version", version)
    shards = deployed_versions().get(version)
    if not shards:
        raise ShardSetError(
            f"version {version!r} is not deployed (deployed: {', '.join(deployed_versions()) or 'none'})"
        )
    clients = tuple(
        ServeShardClient(shard, serve.get_app_handle(app_name(version, shard)), app_name(version, shard))
        for shard in shards
    )
    return ShardSet(version, clients)


def _failed_shards(version: str) -> dict[str, str]:
    """Shard -> the error that stopped it, for the applications of ``version`` that failed to deploy."""
    failed = {}
    for app, status in serve.status().applications.items():
        _, _, rest = app.partition(":")
        app_version, _, shard = rest.partition(":")
        if app_version != version or "DEPLOY_FAILED" not in str(status.status):
            continue
        # The application's message is generic ("Failed to update the deployments"); the deployment's
        # carries the replica's traceback, whose last exception line says what went wrong.
        messages = [str(d.message) for d in status.deployments.values() if d.message] + [str(status.message)]
        failed[shard] = _error_line("\n".join(messages)) or "failed to deploy"
    return failed


def _error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return errors[-1] if errors else (lines[0] if lines else "")


def retire_version(version: str) -> list[str]:
    """Delete every shard application of ``version`` (after the front has drained it); returns their names."""
    _check_name("version", version)
    apps = [app_name(version, shard) for shard in deployed_versions().get(version, [])]
    for app in apps:
        serve.delete(app, _blocking=True)
    logger.info("retired version %s (%d application(s))", version, len(apps))
    return apps
