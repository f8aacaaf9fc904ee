"""Sleuth on a Ray cluster: cluster connection, corpus embedding on Ray Data, shards on Ray Serve.

Only this package (within ``service/``) imports Ray, and only lazily or in ``serve_shards``; the
search and linking logic it distributes stays in plain classes of ``retrieval`` and ``linking``.

* :mod:`~service.cluster.runtime`: :func:`connect` to a new private local cluster or an existing one.
* :mod:`~service.cluster.embedding`: :func:`embed_corpus`, the encoder actor pool.
* :mod:`~service.cluster.front`: :class:`QueryFront`, scatter-gather over shard clients (no Ray import).
* :mod:`~service.cluster.shard_batching`: :class:`BatchingShardClient`, one remote call for the
  requests that queue for a shard (no Ray import).
* :mod:`~service.cluster.serve_shards`: shard deployments, :func:`deploy_version`, :func:`retire_version`
  (imports ``ray.serve``; import it explicitly).
* :mod:`~service.cluster.remote_index`: the sharded index of ``serve --ray`` (shards on Serve).
* :mod:`~service.cluster.serve_linker`: the linker of ``serve --ray --kb`` as a Serve deployment
  (imports ``ray.serve``; import it explicitly).
"""

from service.cluster.embedding import CorpusEmbeddings, EncoderSpec, RayEmbedConfig, embed_corpus, embed_texts
from service.cluster.errors import ClusterError, ClusterUnavailableError, ShardSetError
from service.cluster.front import (
    FrontConfig,
    QueryEncoder,
    QueryFront,
    ScatterResult,
    ShardAnswer,
    ShardBackend,
    ShardClient,
    ShardSet,
)
from service.cluster.runtime import RayCluster, connect
from service.cluster.shard_batching import BatchingShardClient, ShardRequest

__all__ = [
    "BatchingShardClient",
    "ClusterError",
    "ClusterUnavailableError",
    "CorpusEmbeddings",
    "EncoderSpec",
    "FrontConfig",
    "QueryEncoder",
    "QueryFront",
    "RayCluster",
    "RayEmbedConfig",
    "ScatterResult",
    "ShardAnswer",
    "ShardBackend",
    "ShardClient",
    "ShardRequest",
    "ShardSet",
    "ShardSetError",
    "connect",
    "embed_corpus",
    "embed_texts",
]
