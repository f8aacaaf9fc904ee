"""One private local Ray cluster for every Ray test of the session (a start costs 6-12 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    from service.cluster.runtime import connect

    cluster = connect(None, num_cpus=2)
    try:
        yield cluster
    finally:
        cluster.close()
