"""Named errors of the search core. ``service/`` maps them to gRPC status codes."""

from __future__ import annotations


class SearchError(Exception):
    """Base class of search errors."""


class InvalidRequestError(SearchError, ValueError):
    """A request field is out of range or malformed. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DataFormatError(SearchError, ValueError):
    """An input file (corpus, queries, qrels, run) is malformed; the message names file and line."""


class IndexBuildError(SearchError, ValueError):
    """An index cannot be built as asked (shard count, FAISS parameters against the corpus size)."""


class ShardsUnavailableError(SearchError):
    """No shard of a sharded index answered a search: there is no result to give, not even a partial one."""

    def __init__(self, shards: tuple[str, ...]) -> None:
        super().__init__(f"no shard answered ({', '.join(shards)}); try again shortly")
        self.shards = shards
