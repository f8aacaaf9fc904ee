"""Starting or joining a Ray cluster, and leaving it exactly as it was found.

``connect(None)`` starts a private local cluster: no dashboard, its own short temp directory (Ray's
unix sockets live there and their paths must stay under ~107 bytes), a bounded object store, and a
fresh random auth token kept in this process's environment, so nothing is written under the home
directory. Ray 2.60 cannot be held to loopback: it rewrites 127.0.0.1 to the node's address and its
GCS and raylet listen on all interfaces, so that token is what keeps other hosts out.
Closing the returned :class:`RayCluster` stops that cluster and only that one: Ray's own ``ray stop``
kills every Ray process on the machine, including other users' clusters, and is never used.

``connect("host:port")`` joins an existing cluster. Its GCS port is probed with a plain socket
first, so an address where nothing listens fails in ``timeout`` seconds with
:class:`~service.cluster.errors.ClusterUnavailableError` instead of Ray's minute of retries. Closing
a joined cluster only disconnects this driver; the cluster and its Serve applications stay up.

Example:
    >>> with connect(None, num_cpus=2) as cluster:  # doctest: +SKIP
    ...     cluster.owned
    True
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from service.cluster.errors import ClusterUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_OBJECT_STORE_BYTES = 512 * 1024**2
"""Object store of a local cluster. Ray's default (30% of RAM) would reserve ~7 GB of shared memory on a
24 GB machine shared with other services; shard results and embedding blocks are small."""
_AUTH_ENV = ("RAY_AUTH_TOKEN",)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` of a Ray GCS; anything else is a :class:`ClusterUnavailableError` naming it."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterUnavailableError(address, "expected host:port (the head node's GCS address, e.g. 10.0.0.5:6379)")
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float) -> None:
    """Raise :class:`ClusterUnavailableError` unless a TCP connection to ``address`` opens within ``timeout`` s."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterUnavailableError(address, f"no answer on the GCS port within {timeout:g} s ({reason})") from None


class RayCluster:
    """A connection to a Ray cluster; ``owned`` when this process started it (and so stops it on close).

    Built by :func:`connect`, not directly. ``close`` is idempotent and is also run on SIGTERM (when
    connected from the main thread), so a terminated server does not leave an orphan local cluster.
    """

    def __init__(self, address: str, *, owned: bool, temp_dir: Path | None, restore_env: dict[str, str | None]):
        self.address = address
        self.owned = owned
        self.temp_dir = temp_dir
        self._restore_env = restore_env
        self._closed = False
        self._lock = threading.Lock()
        self._previous_sigterm: Any = None
        self._installed_sigterm = False

    @property
    def closed(self) -> bool:
        return self._closed

    def resources(self) -> dict[str, float]:
        """The cluster's total resources (CPU, memory, object store), as Ray reports them."""
        import ray

        return {k: float(v) for k, v in ray.cluster_resources().items()}

    def close(self) -> None:
        """Disconnect; stop the cluster (Serve included) if this process started it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        import ray

        if self.owned and "ray.serve" in sys.modules:  # Serve can only be running if this process imported it
            try:
                from ray import serve

                serve.shutdown()
            except Exception as exc:  # Serve never started, or the cluster is already gone: stop it anyway
                logger.debug("serve.shutdown on close: %s", exc)
        ray.shutdown()
        for name, value in self._restore_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self._uninstall_sigterm()
        logger.info("%s Ray cluster %s", "stopped" if self.owned else "disconnected from", self.address)

    def __enter__(self) -> RayCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- SIGTERM ------------------------------------------------------------------------------------

    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; the caller closes explicitly
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed_sigterm = True

    def _uninstall_sigterm(self) -> None:
        if not self._installed_sigterm or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._installed_sigterm = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_sigterm
        logger.warning("SIGTERM: closing Ray cluster %s", self.address)
        self.close()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            # Default action: die by the same signal, as if no handler had been installed.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


def connect(
    address: str | None = None,
    *,
    num_cpus: float = 2,
    object_store_bytes: int = DEFAULT_OBJECT_STORE_BYTES,
    timeout: float = 5.0,
    namespace: str = "sleuth",
    init: Callable[..., Any] | None = None,
) -> RayCluster:
    """Start a private local cluster (``address=None``) or join the one at ``address`` (``host:port``).

    Args:
        address: the head node's GCS address, or ``None`` for a new local cluster.
        num_cpus: CPUs a local cluster offers. Actors and replicas ask for fractions of one (on two
            cores, a Ray Data pool of two 1-CPU actors deadlocks: nothing is left for its tasks).
        object_store_bytes: object store of a local cluster.
        timeout: seconds to wait for ``address`` to answer before :class:`ClusterUnavailableError`.
        namespace: Ray namespace of this driver's named actors.
        init: ``ray.init`` (injectable for tests of the argument handling).
    """
    import ray

    init = init or ray.init
    if address is not None:
        probe(address, timeout)
    if ray.is_initialized():
        raise ClusterUnavailableError(address or "local", "this process is already connected to a Ray cluster")
    if address is not None:
        try:
            context = init(address=address, namespace=namespace, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:  # Ray's handshake errors
            raise ClusterUnavailableError(address, f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        cluster = RayCluster(_gcs_address(context, address), owned=False, temp_dir=None, restore_env={})
        logger.info("joined Ray cluster %s", cluster.address)
        return cluster

    # A short path: Ray puts unix sockets under it.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    restore_env = {name: os.environ.get(name) for name in _AUTH_ENV}
    # Token auth stays on (Ray 2.60's default; ray.init switches the mode on itself) but the token lives
    # in this process's environment, inherited by the cluster it starts, instead of ~/.ray/auth_token.
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    started = time.perf_counter()
    try:
        context = init(
            address="local",  # never attach to someone else's cluster found in /tmp/ray or RAY_ADDRESS
            num_cpus=num_cpus,
            object_store_memory=object_store_bytes,
            include_dashboard=False,
            _temp_dir=str(temp_dir),
            namespace=namespace,
            log_to_driver=False,
        )
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        for name, value in restore_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        raise
    cluster = RayCluster(_gcs_address(context, "local"), owned=True, temp_dir=temp_dir, restore_env=restore_env)
    cluster._install_sigterm()
    logger.info(
        "started local Ray cluster %s in %.1f s (%g CPUs)", cluster.address, time.perf_counter() - started, num_cpus
    )
    return cluster


def _gcs_address(context: Any, fallback: str) -> str:
    address = getattr(context, "address_info", {}).get("gcs_address") if context is not None else None
    return str(address or fallback)
