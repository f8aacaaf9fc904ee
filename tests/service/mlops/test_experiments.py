from __future__ import annotations

import json
import os
import random

import pytest

from service.mlops.experiments import CANDIDATE, CONTROL, Experiment, ExperimentConfigError, ExperimentSource


def test_assignment_is_deterministic_per_key_and_independent_of_order() -> None:
    exp = Experiment("canary", candidate_share=0.3)
    keys = [f"user-{i}" for i in range(2000)]
    first = [exp.assign(k) for k in keys]
    assert first == [exp.assign(k) for k in reversed(keys)][::-1]
    assert Experiment("canary", candidate_share=0.3).assign("user-7") == exp.assign("user-7")


@pytest.mark.parametrize("share", [0.01, 0.1, 0.5])
def test_share_accuracy_over_many_users(share: float) -> None:
    exp = Experiment("share-test", candidate_share=share)
    n = 100_000
    observed = sum(exp.assign(f"u{i}") == CANDIDATE for i in range(n)) / n
    # 5 standard errors of a binomial proportion.
    assert abs(observed - share) < 5 * (share * (1 - share) / n) ** 0.5


def test_growing_the_share_only_moves_users_into_the_candidate() -> None:
    small, large = Experiment("e", 0.05), Experiment("e", 0.2)
    for i in range(5000):
        if small.assign(f"u{i}") == CANDIDATE:
            assert large.assign(f"u{i}") == CANDIDATE


def test_different_experiments_split_independently_and_no_key_is_random() -> None:
    a, b = Experiment("a", 0.5), Experiment("b", 0.5)
    agree = sum(a.assign(f"u{i}") == b.assign(f"u{i}") for i in range(20_000)) / 20_000
    assert 0.47 < agree < 0.53
    rng = random.Random(1)
    arms = {a.assign(None, rng) for _ in range(200)}
    assert arms == {CONTROL, CANDIDATE}
    assert Experiment("x", 0.0).assign("anyone") == CONTROL and Experiment("x", 1.0).assign("anyone") == CANDIDATE


def test_source_rereads_changes_without_restart_and_keeps_the_last_good_config(tmp_path) -> None:
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps({"name": "e1", "candidate_share": 0.1, "candidate": {"rerank": True}}))
    source = ExperimentSource(path)
    assert source.current().candidate_share == 0.1
    assert source.current().candidate.rerank is True

    path.write_text(json.dumps({"name": "e1", "candidate_share": 0.25}))
    os.utime(path, ns=(1, 10**18))  # make sure the change is seen even within one mtime tick
    assert source.current().candidate_share == 0.25

    path.write_text("{broken")
    os.utime(path, ns=(1, 2 * 10**18))
    assert source.current().candidate_share == 0.25  # malformed edit ignored

    path.unlink()
    assert source.current() is None  # stopped


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "e", "candidate_share": 1.5}, "candidate_share"),
        ({"name": "e"}, "candidate_share"),
        ({"name": "e", "candidate_share": 0.1, "candidate": {"rerank": "yes"}}, r"candidate\.rerank"),
        ({"name": "e", "candidate_share": 0.1, "control": {"colour": 1}}, "unknown field"),
    ],
)
def test_bad_configs_name_the_field(data: dict, message: str, tmp_path) -> None:
    path = tmp_path / "e.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ExperimentConfigError, match=message):
        ExperimentSource(path)
