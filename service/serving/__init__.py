"""Serving machinery: loading, the server builder, the search runner, batching, limits, versions, workers."""
