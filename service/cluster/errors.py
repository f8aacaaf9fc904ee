"""Named errors of the Ray layer. The command line prints them as one line and exits 2."""

from __future__ import annotations


class ClusterError(Exception):
    """Base class of the Ray layer's errors."""


class ClusterUnavailableError(ClusterError):
    """The Ray cluster at ``address`` does not answer (nothing listens, or the handshake failed)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"Ray cluster {address}: {reason}")
        self.address = address
        self.reason = reason


class ShardSetError(ClusterError, ValueError):
    """A shard set is malformed (no shards, duplicate names, an unknown version)."""


class LinkerUnavailableError(ClusterError):
    """No replica of the linker deployment answered (the client gets UNAVAILABLE)."""
