"""The entity linker as a Ray Serve deployment: what ``sleuth serve --ray --kb DIR`` links with.

One Serve application ``sleuth:<model>:linker`` (``<model>`` is the linker model's version, or
``prior-baseline`` without a model) runs ``replicas`` copies of :class:`LinkerReplica`; each opens
the KB and the model once, in its constructor, through the ``loader`` it was given (a picklable
callable returning an :class:`~linking.EntityLinker`: :func:`open_linker` in production). The linker
is not sharded: the KB fits one process.

The server's Link servicer keeps its code and calls a :class:`RemoteLinker` in place of the
in-process linker: the request is checked in the server (a bad request is INVALID_ARGUMENT without a
round trip), then sent to one replica through the application's handle. Serve does not retry a
request whose replica died, so :class:`RemoteLinker` does (linking is read-only); when no replica
answers within ``timeout_s`` it raises :class:`~service.cluster.errors.LinkerUnavailableError`
(UNAVAILABLE to the client). The server keeps a copy of the KB for the entities' names.

Swapping the KB or the model of a running ``serve --ray`` server (Admin Activate of a ``kb`` or
``linker`` version) is not supported: restart the server on the new versions.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import serve

from artifacts import Manifest
from linking import EntityLinker, KnowledgeBase
from linking.pipeline import LinkOptions, validate_request
from linking.types import Link, Mention
from service.cluster.errors import ClusterError, LinkerUnavailableError
from service.cluster.front import replica_lost
from service.cluster.serve_shards import APP_PREFIX, LINKER_APP, _check_name, ensure_serve

logger = logging.getLogger(__name__)

LinkerLoader = Callable[[], EntityLinker]
"""Opens the linker in a replica; must pickle (a module-level function, or a partial of one)."""
PRIOR_BASELINE = "prior-baseline"


def open_linker(kb_dir: str, model_dir: str | None, encoder: str, runtime: str) -> EntityLinker:
    """What a linker replica runs in its constructor: the encoder, then ``EntityLinker.open``."""
    from retrieval import load_encoder

    return EntityLinker.open(kb_dir, model_dir, load_encoder(encoder, runtime))


class LinkerReplica:
    """What one Serve replica of the linker runs: the linker, opened once in the constructor."""

    def __init__(self, loader: LinkerLoader) -> None:
        self._linker = loader()
        logger.info("linker loaded (%d entities, pid %d)", len(self._linker.kb), os.getpid())

    def link(self, text: str, mentions: Sequence[Mention] | None, options: LinkOptions) -> list[Link]:
        return self._linker.link(text, mentions, options)

    def pid(self) -> int:
        """The replica's process id (fault tests kill replicas by it)."""
        return os.getpid()


LinkerDeployment = serve.deployment(name=LINKER_APP)(LinkerReplica)


def linker_app_name(model_version: str) -> str:
    """The Serve application of the linker with model ``model_version``."""
    return f"{APP_PREFIX}:{model_version}:{LINKER_APP}"


@dataclass(frozen=True)
class LinkerDeploymentConfig:
    """Replicas of the linker and the CPUs each reserves (fractional on a small node)."""

    replicas: int = 2
    cpus_per_replica: float = 0.5
    max_ongoing_requests: int = 16

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ClusterError(f"linker replicas must be at least 1, got {self.replicas}")
        if not 0 < self.cpus_per_replica <= 64:
            raise ClusterError(f"linker cpus_per_replica must be within (0, 64], got {self.cpus_per_replica}")


def deploy_linker(model_version: str, loader: LinkerLoader, config: LinkerDeploymentConfig | None = None) -> Any:
    """Deploy (or update in place) ``sleuth:<model_version>:linker``; its handle once every replica loaded.

    A replica that fails to open the linker fails the call with :class:`ClusterError` naming the
    application and the replica's exception.
    """
    config = config or LinkerDeploymentConfig()
    _check_name("model", model_version)
    ensure_serve()
    app = linker_app_name(model_version)
    bound = LinkerDeployment.options(
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": config.cpus_per_replica},
        max_ongoing_requests=config.max_ongoing_requests,
        max_constructor_retry_count=2,
    ).bind(loader)
    started = time.perf_counter()
    try:
        handle = serve.run(bound, name=app, route_prefix=None)
    except Exception as exc:  # a failed constructor: Serve raises with the replica's traceback
        lines = [line for line in str(exc).splitlines() if line.strip()]
        serve.delete(app, _blocking=True)
        raise ClusterError(f"linker {app} could not start: {lines[-1] if lines else type(exc).__name__}") from None
    logger.info("deployed %s: %d replica(s) in %.1f s", app, config.replicas, time.perf_counter() - started)
    return handle


def retire_linker(model_version: str) -> None:
    """Delete the linker application of ``model_version`` (on shutdown)."""
    serve.delete(linker_app_name(model_version), _blocking=True)


class RemoteLinker:
    """An :class:`~linking.EntityLinker` stand-in whose ``link`` runs on a Serve replica.

    ``kb`` is the server's own copy of the KB (the servicer reads entity names from it). A call is
    retried on another replica when its replica died, up to ``max_attempts`` and within ``timeout_s``.
    """

    def __init__(
        self,
        handle: Any,
        kb: KnowledgeBase,
        *,
        timeout_s: float = 30.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.05,
        is_retryable: Callable[[BaseException], bool] = replica_lost,
    ) -> None:
        self.kb = kb
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self._handle = handle
        self._is_retryable = is_retryable
        self.retries = 0  # replica deaths survived (for tests and logs)

    def link(
        self, text: str, mentions: Sequence[Mention] | None = None, options: LinkOptions | None = None
    ) -> list[Link]:
        options = options or LinkOptions()
        validate_request(text, mentions, options)  # a bad request never reaches the cluster
        sent = list(mentions) if mentions is not None else None
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkerUnavailableError(f"no linker replica answered within {self.timeout_s} s")
            try:
                links: list[Link] = self._handle.link.remote(text, sent, options).result(timeout_s=remaining)
                return links
            except TimeoutError:
                raise LinkerUnavailableError(f"no linker replica answered within {self.timeout_s} s") from None
            except Exception as exc:
                attempt += 1
                if not self._is_retryable(exc):  # a deleted application, a replica's own failure
                    logger.warning("linker call failed", exc_info=exc)
                    reason = next(iter(str(exc).splitlines()), "")
                    raise LinkerUnavailableError(f"linker failed: {type(exc).__name__}: {reason}") from None
                if attempt >= self.max_attempts:
                    raise LinkerUnavailableError(
                        f"linker replicas lost {attempt} time(s): {type(exc).__name__}"
                    ) from None
                self.retries += 1
                logger.info("linker: replica lost (%s); retry %d", type(exc).__name__, attempt)
                time.sleep(min(self.retry_backoff_s * 2 ** (attempt - 1), max(0.0, deadline - time.monotonic())))

    def with_kb(self, kb: KnowledgeBase) -> EntityLinker:
        raise ClusterError("serve --ray: switching the KB of a running server is not supported; restart it")

    def with_model(self, *args: Any, **kwargs: Any) -> EntityLinker:
        raise ClusterError("serve --ray: switching the linker model of a running server is not supported; restart it")


def model_version_of(model_dir: Path | None) -> str:
    """The version a linker model directory's manifest names (``prior-baseline`` without one)."""
    return Manifest.read(model_dir).version if model_dir is not None else PRIOR_BASELINE


@dataclass
class RayLinkerServing:
    """Deploys the linker of ``serve --ray --kb DIR`` and retires it when the server stops."""

    replicas: int = 2
    cpus_per_replica: float = 0.5
    timeout_s: float = 30.0
    deployed: str | None = None

    def load(self, kb_dir: Path, model_dir: Path | None, loader: LinkerLoader) -> tuple[RemoteLinker, str, str]:
        """Deploy the linker; the :class:`RemoteLinker`, the KB's version and the model's version."""
        kb = KnowledgeBase.load(kb_dir)  # verifies the KB before any replica starts
        kb_version = kb.manifest.version if kb.manifest is not None else "kb@unknown"
        model_version = model_version_of(model_dir)
        config = LinkerDeploymentConfig(replicas=self.replicas, cpus_per_replica=self.cpus_per_replica)
        handle = deploy_linker(model_version, loader, config)
        self.deployed = model_version
        return RemoteLinker(handle, kb, timeout_s=self.timeout_s), kb_version, model_version

    def loader(self, kb_dir: Path, model_dir: Path | None, encoder: str, runtime: str) -> LinkerLoader:
        """The production loader: :func:`open_linker` on these directories and this encoder."""
        return functools.partial(
            open_linker, str(kb_dir), str(model_dir) if model_dir is not None else None, encoder, runtime
        )

    def close(self) -> None:
        if self.deployed is not None:
            retire_linker(self.deployed)
            self.deployed = None
