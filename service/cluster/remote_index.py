"""A sharded index whose shards answer from Ray Serve deployments: what ``sleuth serve --ray`` serves.

The server process keeps the whole single-node search path (:class:`retrieval.pipeline.Searcher`:
fusion, reranking, snippets, stage scores) and swaps only where the shards live: each shard of a
sharded index (``index build --shards N``; an unsharded index is one shard) is a Serve application
of ``replicas`` copies of :class:`~service.cluster.serve_shards.ShardReplica`, which loads the shard
directory once, and the server opens the index with :class:`RemoteShard` in place of each shard
(:meth:`retrieval.sharding.ShardedSearchIndex.load` with ``open_shard``). Results are therefore those
of the same index searched in one process.

A :class:`RemoteShard` call is retried on another replica when its replica died (searches are
read-only); a shard that does not answer within ``timeout_s`` (all replicas gone, overloaded)
records itself as missing and answers empty, so the response names it in ``missing_shards`` and holds
the hits of the shards that answered; when none answered, the search fails with UNAVAILABLE.

An unsharded index is served as one shard (``shard-000``, the index directory itself): the same
files, so the same results.

Versions: :meth:`RayIndexServing.load` deploys a version's shards beside the running ones (or joins
them when another front deployed them) and :meth:`RayIndexServing.release` deletes them once the
server has stopped using them and no request runs on them (the serving state's ``on_release``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import IncompatibleArtifactError, Manifest
from retrieval.dense import FaissConfig
from retrieval.index import SearchIndex
from retrieval.sharding import ShardedSearchIndex, is_sharded
from retrieval.shards import LocalShard, concurrent, record_missing
from retrieval.types import Document, Hit
from service.cluster.errors import ClusterError
from service.cluster.front import replica_lost

logger = logging.getLogger(__name__)

UNSHARDED_SHARD = "shard-000"
"""The one shard an unsharded index is served as (its directory is the index's own)."""


def open_local_shard(directory: str, faiss: dict[str, Any]) -> LocalShard:
    """What a shard replica runs in its constructor (module level, so that it pickles)."""
    return LocalShard.load(directory, FaissConfig.from_dict(faiss), name=Path(directory).name)


class _Pending:
    __slots__ = ("args", "error", "finished", "result", "verb")

    def __init__(self, verb: str, args: tuple[Any, ...]) -> None:
        self.verb, self.args = verb, args
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None


class CoalescingCaller:
    """Sends the calls that queue for one shard while its previous call is in flight as one call.

    A Serve handle call costs about the same for one request as for thirty (docs/ray.md), and every
    search calls every shard, so the number of calls sets the ceiling. A caller finding no call in
    flight sends at once, taking along whatever has queued (at most ``max_batch``; no timer, so a lone
    call never waits); callers arriving meanwhile wait, and one of them sends the next batch when the
    call returns. ``send(batch, timeout)`` returns one result per ``(verb, args)``; if it raises, every
    call of the batch gets that exception.
    """

    def __init__(
        self, send: Callable[[list[tuple[str, tuple[Any, ...]]], float], list[Any]], max_batch: int = 64
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._sending = False
        self.calls = 0  # calls sent (for tests and benchmarks)

    def call(self, verb: str, args: tuple[Any, ...], timeout: float) -> Any:
        pending = _Pending(verb, args)
        deadline = time.monotonic() + timeout
        with self._cond:
            self._queue.append(pending)
        while True:
            with self._cond:
                while not pending.finished and self._sending:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        if pending in self._queue:
                            self._queue.remove(pending)
                        raise TimeoutError(f"no answer within {timeout:.2f} s")
                    self._cond.wait(remaining)
                if pending.finished:
                    break
                self._sending = True  # this caller sends the next batch (its own call is queued)
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self.calls += 1
            try:
                results = self._send([(p.verb, p.args) for p in batch], max(deadline - time.monotonic(), 0.001))
                if len(results) != len(batch):
                    raise RuntimeError(f"the shard answered {len(results)} of {len(batch)} calls")
                errors: list[BaseException | None] = [None] * len(batch)
            except BaseException as exc:  # handed to every caller of the batch
                results, errors = [None] * len(batch), [exc] * len(batch)
            with self._cond:
                for item, result, error in zip(batch, results, errors, strict=True):
                    item.result, item.error, item.finished = result, error, True
                self._sending = False
                self._cond.notify_all()
        if pending.error is not None:
            raise pending.error
        return pending.result


class RemoteShard:
    """An :class:`retrieval.shards.IndexShard` whose calls go to a Serve deployment handle.

    ``handle.call.remote(verb, *args)`` runs the verb on one replica. Blocking calls: the scatter of
    :class:`~retrieval.sharding.ShardedSearchIndex` runs the shards' calls on a thread pool at once.
    """

    def __init__(
        self,
        name: str,
        documents: list[Document],
        handle: Any,
        *,
        dimension: int,
        timeout_s: float = 2.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.05,
        is_retryable: Callable[[BaseException], bool] = replica_lost,
    ) -> None:
        self.name = name
        self.documents = documents
        self.doc_count = len(documents)
        self.dimension = dimension
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self._handle = handle
        self._is_retryable = is_retryable
        self.retries = 0  # replica deaths survived (for tests and logs)
        self.caller = CoalescingCaller(
            lambda calls, timeout: handle.call_many.remote(calls).result(timeout_s=max(timeout, 0.001))
        )

    def _call(self, verb: str, empty: Callable[[], Any], *args: Any) -> Any:
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = "no answer within the shard timeout"
                break
            try:
                return self.caller.call(verb, args, remaining)
            except TimeoutError:
                reason = f"no answer within {self.timeout_s} s"
                break
            except Exception as exc:  # a replica's death is retried; anything else makes the shard missing
                attempt += 1
                if not self._is_retryable(exc) or attempt >= self.max_attempts:
                    reason = f"{type(exc).__name__}: {next(iter(str(exc).splitlines()), '')}"
                    break
                self.retries += 1
                logger.info("shard %s: replica lost (%s); retry %d", self.name, type(exc).__name__, attempt)
                time.sleep(min(self.retry_backoff_s * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic())))
        logger.warning("shard %s: %s (%s); its documents are left out of this result", self.name, reason, verb)
        record_missing(self.name)
        return empty()

    def bm25_top(self, query_tokens: list[str], k: int) -> list[Hit]:
        result: list[Hit] = self._call("bm25_top", list, list(query_tokens), k)
        return result

    def dense_top(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        rows = len(query_vectors)
        result: list[list[Hit]] = self._call("dense_top", lambda: [[] for _ in range(rows)], query_vectors, k)
        return result

    def bm25_contributions(self, term_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        shape = (len(term_ids), len(positions))
        result: np.ndarray = self._call(
            "bm25_contributions", lambda: np.zeros(shape, dtype=np.float32), term_ids, positions
        )
        return result

    def document_frequencies(self, term_ids: np.ndarray) -> np.ndarray:
        size = len(term_ids)
        result: np.ndarray = self._call("document_frequencies", lambda: np.zeros(size, dtype=np.int64), term_ids)
        return result

    def dense_vectors(self, positions: np.ndarray) -> np.ndarray:
        shape = (len(positions), self.dimension)
        result: np.ndarray = self._call("dense_vectors", lambda: np.zeros(shape, dtype=np.float32), positions)
        return result


def check_fits(shards: int, replicas: int, cpus_per_replica: float) -> None:
    """Refuse a deployment the cluster's CPUs can never hold (Serve would wait for it forever).

    Raises :class:`~service.cluster.errors.ClusterError` naming the options to change.
    """
    import ray

    total = float(ray.cluster_resources().get("CPU", 0.0))
    needed = shards * replicas * cpus_per_replica
    if needed > total + 1e-9:
        raise ClusterError(
            f"{shards} shard(s) x {replicas} replica(s) x {cpus_per_replica} CPU (--ray-cpus) = {needed:g} CPUs, "
            f"but the cluster has {total:g}: lower --replicas or --ray-cpus, or add nodes"
        )


@dataclass
class RayIndexServing:
    """Loads sharded index versions onto Serve deployments and retires them (``serve --ray``)."""

    executor: Executor
    replicas: int = 2
    cpus_per_replica: float = 0.5
    timeout_s: float = 2.0
    deployed_here: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self, path: Path) -> SearchIndex:
        """Deploy (or join) the shards of the sharded index at ``path``; the index whose shards are remote."""
        from ray import serve

        from service.cluster import serve_shards

        path = Path(path)
        manifest = Manifest.read(path)
        version = manifest.version
        sharded = is_sharded(manifest)
        if sharded:
            entries = manifest.params["sharding"]["shards"]
            shard_dirs = {entry["name"]: path / entry["name"] for entry in entries}
        else:  # an unsharded index holds one shard's files: serve it as one shard
            shard_dirs = {UNSHARDED_SHARD: path}
        try:
            dimension = int(manifest.params["encoder"]["dimension"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleArtifactError(f"{path}: manifest has no encoder dimension ({exc})") from None
        with self._lock:
            if version not in serve_shards.deployed_versions():
                check_fits(len(shard_dirs), self.replicas, self.cpus_per_replica)
            if version in serve_shards.deployed_versions():
                logger.info("joining the running shards of %s", version)
            else:
                loader = functools.partial(open_local_shard, faiss=manifest.params["faiss"])
                config = serve_shards.ShardDeploymentConfig(
                    replicas=self.replicas, cpus_per_replica=self.cpus_per_replica
                )
                started = time.perf_counter()
                logger.info("deploying %s: %d shard(s) x %d replica(s)", version, len(shard_dirs), self.replicas)
                serve_shards.deploy_version(version, shard_dirs, loader, config=config)
                self.deployed_here.add(version)
                logger.info("deployed %s in %.1f s", version, time.perf_counter() - started)
        handles = {name: serve.get_app_handle(serve_shards.app_name(version, name)) for name in shard_dirs}

        def open_shard(directory: Path, name: str, documents: list[Document]) -> RemoteShard:
            return RemoteShard(name, documents, handles[name], dimension=dimension, timeout_s=self.timeout_s)

        scatter = concurrent(self.executor)
        if not sharded:
            return ShardedSearchIndex.load_single(path, open_shard, name=UNSHARDED_SHARD, scatter=scatter)
        return ShardedSearchIndex.load(path, scatter=scatter, open_shard=open_shard)

    def release(self, version: str, value: object = None) -> None:
        """Delete ``version``'s shard applications if this server deployed them (it no longer serves them)."""
        from service.cluster import serve_shards

        with self._lock:
            if version not in self.deployed_here:
                return
            self.deployed_here.discard(version)
        serve_shards.retire_version(version)

    def release_searcher(self, version: str, searcher: Any) -> None:
        """``ServingState.on_release`` for the search state: retire the released index's shards."""
        index = getattr(searcher, "index", None)
        self.release(getattr(index, "version", version))

    def close(self) -> None:
        """Retire every version this server deployed (on shutdown)."""
        for version in sorted(self.deployed_here):
            self.release(version)
