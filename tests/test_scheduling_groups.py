"""The groups ``make test`` schedules its two pytest workers by (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import HEAVY_FIXTURES, scheduling_group


def test_every_user_of_a_heavy_fixture_is_in_its_group(request: pytest.FixtureRequest) -> None:
    """A test that uses a heavy session fixture from a module missing from ``MODULE_GROUPS`` would
    build that fixture a second time on the other worker."""
    items = request.session.items
    misplaced = [
        (item.nodeid, fixture)
        for item in items
        for fixture, group in HEAVY_FIXTURES.items()
        if fixture in getattr(item, "fixturenames", ()) and scheduling_group(item.nodeid) != group
    ]
    assert not misplaced, misplaced
    ray = [item.nodeid for item in items if item.get_closest_marker("ray") and scheduling_group(item.nodeid) != "ray"]
    assert not ray, ray


def test_groups_by_module_otherwise() -> None:
    assert scheduling_group("tests/retrieval/test_fusion.py::test_rrf") == "tests/retrieval/test_fusion.py"
    assert scheduling_group("tests/service/cluster/test_ray_serve.py::test_x[batched]") == "ray"
    assert scheduling_group("tests/retrieval/test_quality.py::test_guard_bm25_on_scifact_train_subset") == (
        scheduling_group("tests/retrieval/test_onnx_encoder.py::test_int8_vectors_are_close_and_rank_scifact_as_well")
    )
