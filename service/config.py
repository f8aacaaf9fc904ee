"""Server configuration: one frozen dataclass, filled from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 50051
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """What the server loads and how it listens.

    ``index`` is a search index directory; ``None`` means the embedded demo (built from the demo
    corpus shipped with the package, cached outside the repo, on first start).
    """

    host: str = "localhost"
    port: int = DEFAULT_PORT
    index: Path | None = None
    encoder: str | None = None  # default: the encoder named in the index manifest
    reranker: Path | None = None
    kb: Path | None = None
    linker_model: Path | None = None
    threads: int = 4
    max_message_bytes: int = MAX_MESSAGE_BYTES
    grace_seconds: float = 5.0
    # Serving (see service/serving/runner.py, service/serving/limits.py, service/security.py).
    workers: int = 1  # processes sharing the port through SO_REUSEPORT
    max_inflight: int = 256  # per worker; past it, RESOURCE_EXHAUSTED at once
    batch_max_size: int = 32  # query encodings per micro-batch
    batch_max_wait_ms: float = 2.0  # longest wait for a micro-batch to fill
    encoder_runtime: str = "onnx"  # search: torch | onnx | onnx-int8 (linking follows its model: serving/linker.py)
    reranker_runtime: str = "torch"  # torch | onnx: how a cross-encoder reranker runs
    encoder_bf16: bool = False  # encode queries under bfloat16 autocast (torch runtime; service/serving/batching.py)
    torch_threads: int | None = None  # None: cores / workers
    faiss_threads: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_token_file: Path | None = None
    # Lifecycle and observability (see service/serving/lifecycle.py, service/serving/metrics.py).
    registry: Path | None = None  # serve the registry's active versions; enables Activate/Rollback
    registry_poll_seconds: float = 2.0  # follow the registry's active pointer (0 = do not)
    admin: bool = True  # the AdminService (refused on a non-loopback host without a token)
    metrics_port: int = 0  # Prometheus /metrics port (0 = off)
    log_queries: bool = False  # put query texts in the access log
    # Experiments and feedback (see service/serving/online.py, service/mlops/).
    experiment: Path | None = None  # JSON experiment file, re-read when it changes
    feedback_db: Path | None = None  # SQLite feedback log; None: no FeedbackService
    drift_threshold: float = 0.25  # PSI above which a drift feature is in alarm
    # Shards on Ray Serve (see service/cluster/remote_index.py); ray is "local" or a head address.
    ray: str | None = None
    ray_replicas: int = 2  # replicas per shard
    ray_cpus: float = 0.5  # CPUs each replica reserves
    shard_timeout_seconds: float = 2.0  # a shard that has not answered by then is named in missing_shards

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"
