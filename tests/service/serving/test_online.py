"""Experiments, feedback and drift through a real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest

from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher
from service.cli import main
from service.config import ServerConfig
from service.generated.sleuth.v1 import feedback_pb2, feedback_pb2_grpc, search_pb2, search_pb2_grpc
from service.mlops.experiments import Experiment
from service.mlops.feedback import FeedbackLog
from service.serving.loading import Services
from tests.service.conftest import running_server
from tests.service.lifecycle_helpers import free_port
from tests.service.serving.test_shutdown import REPO, wait_until_serving


def test_experiment_arms_follow_assignment_and_change_without_restart(tiny_index, fake_encoder, tmp_path) -> None:
    path = tmp_path / "experiment.json"
    spec = {"name": "bm25-canary", "candidate_share": 0.3, "candidate": {"mode": "bm25"}}
    path.write_text(json.dumps(spec))
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, experiment=path)
    experiment = Experiment.from_dict(spec)
    with running_server(Services(searcher=Searcher(tiny_index, fake_encoder)), config) as address:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(address))
        arms = {}
        for i in range(60):
            response = stub.Search(search_pb2.SearchRequest(query="cat", session_id=f"user-{i}"), timeout=10)
            arms[f"user-{i}"] = response.arm
            assert response.experiment == "bm25-canary"
            assert response.mode == ("bm25" if response.arm == "candidate" else "hybrid")
            assert len(response.request_id) >= 8
        assert arms == {user: experiment.assign(user) for user in arms}
        assert set(arms.values()) == {"control", "candidate"}

        path.write_text(json.dumps({**spec, "candidate_share": 1.0}))
        os.utime(path, ns=(1, 10**18))
        assert stub.Search(search_pb2.SearchRequest(query="cat", session_id="user-x"), timeout=10).arm == "candidate"
        path.unlink()
        stopped = stub.Search(search_pb2.SearchRequest(query="cat", session_id="user-x"), timeout=10)
        assert (stopped.experiment, stopped.arm) == ("", "")
        with pytest.raises(grpc.RpcError) as info:
            stub.Search(search_pb2.SearchRequest(query="cat", session_id="s" * 200), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("session_id:")


def test_feedback_rpc_records_and_validates(tiny_index, fake_encoder, tmp_path) -> None:
    db = tmp_path / "feedback.db"
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, feedback_db=db)
    with running_server(Services(searcher=Searcher(tiny_index, fake_encoder)), config) as address:
        channel = grpc.insecure_channel(address)
        search = search_pb2_grpc.SearchServiceStub(channel).Search(search_pb2.SearchRequest(query="dog"), timeout=10)
        feedback = feedback_pb2_grpc.FeedbackServiceStub(channel)
        shown = [
            feedback_pb2.FeedbackEvent(
                kind="impression", request_id=search.request_id, query="dog", doc_id=h.doc_id, position=h.rank
            )
            for h in search.hits
        ]
        click = feedback_pb2.FeedbackEvent(
            kind="click", request_id=search.request_id, doc_id=search.hits[0].doc_id, position=1, dwell_ms=40_000
        )
        assert (
            feedback.Record(feedback_pb2.FeedbackRequest(events=[*shown, click]), timeout=10).recorded == len(shown) + 1
        )
        bad = feedback_pb2.FeedbackEvent(kind="click", request_id="r", doc_id="d")  # no position
        with pytest.raises(grpc.RpcError) as info:
            feedback.Record(feedback_pb2.FeedbackRequest(events=[click, bad]), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("events[1].position:")
    events = list(FeedbackLog(db).events())
    assert len(events) == len(shown) + 1  # the rejected call wrote nothing
    assert events[-1].dwell_ms == 40_000 and events[0].query == "dog"


def test_drift_alarm_on_shifted_queries_reaches_metrics_and_report(tiny_index, fake_encoder, capsys) -> None:
    port = free_port()
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, metrics_port=port, drift_threshold=0.25)
    url = f"http://127.0.0.1:{port}/metrics"
    with running_server(Services(searcher=Searcher(tiny_index, fake_encoder)), config) as address:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(address))
        for _ in range(80):
            stub.Search(search_pb2.SearchRequest(query="zzz qqq xyzzy plugh " * 6), timeout=10)
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'sleuth_drift_alert{feature="query_length"} 1.0' in text
        assert main(["report", "drift", "--metrics-url", url, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["query_length"]["alert"] == 1.0 and report["query_length"]["psi"] > 0.25


FEEDBACK_SERVER = """
import sys
from dataclasses import replace
from pathlib import Path
from service.config import ServerConfig
from service.serving.workers import run
from tests.service.serving_app import load

index, port, db = sys.argv[1:]
config = ServerConfig(host="127.0.0.1", port=int(port), index=Path(index), threads=2, feedback_db=Path(db))
sys.exit(run(config, load=load))
"""


def test_acknowledged_feedback_survives_sigkill_of_the_server(tiny_index, tmp_path) -> None:
    """Events acknowledged over gRPC are on disk: SIGKILL the server mid-stream and count them."""
    db, port = tmp_path / "feedback.db", free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SLEUTH_TEST_MARKERS": str(tmp_path)}
    with open(tmp_path / "server.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", FEEDBACK_SERVER, str(tiny_index.path), str(port), str(db)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            address = f"127.0.0.1:{port}"
            wait_until_serving(address, process)
            stub = feedback_pb2_grpc.FeedbackServiceStub(grpc.insecure_channel(address))
            acknowledged = []
            for i in range(60):
                event = feedback_pb2.FeedbackEvent(kind="click", request_id=f"req-{i}", doc_id="cats", position=1)
                stub.Record(feedback_pb2.FeedbackRequest(events=[event]), timeout=30)
                acknowledged.append(f"req-{i}")
            in_flight = stub.Record.future(
                feedback_pb2.FeedbackRequest(
                    events=[feedback_pb2.FeedbackEvent(kind="click", request_id="late", doc_id="cats", position=1)]
                ),
                timeout=30,
            )
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
    stored = [e.request_id for e in FeedbackLog(db).events()]
    assert set(acknowledged) <= set(stored)
    assert len(stored) == len(set(stored)) and len(stored) in (60, 61)  # "late" was acked or it was not
    if in_flight.exception() is None:
        assert "late" in stored


def test_an_arm_can_serve_another_index_version(tiny_index, tiny_corpus, fake_encoder, tmp_path) -> None:
    """Candidate arm = another index directory: loaded in the background, labelled only once serving."""
    extra = tmp_path / "corpus2.jsonl"
    extra.write_text(
        tiny_corpus.read_text() + json.dumps({"_id": "hamster", "title": "Hamsters", "text": "pet"}) + "\n"
    )
    other = SearchIndex.build(extra, tmp_path / "v2", fake_encoder)
    path = tmp_path / "experiment.json"
    path.write_text(
        json.dumps({"name": "v2-canary", "candidate_share": 1.0, "candidate": {"version": str(other.path)}})
    )
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, experiment=path)
    with running_server(Services(searcher=Searcher(tiny_index, fake_encoder)), config) as address:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(address))
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            response = stub.Search(search_pb2.SearchRequest(query="hamsters", session_id="u1"), timeout=10)
            seen.append((response.arm, response.index_version))
            if response.arm == "candidate":
                break
            time.sleep(0.1)
        assert seen[-1] == ("candidate", other.version)
        assert response.hits[0].doc_id == "hamster"
        # Until the candidate was loaded, requests were served and labelled as control (the old version).
        assert all(arm == "control" and version == tiny_index.version for arm, version in seen[:-1])


def test_arms_appear_in_access_log_and_metrics(tiny_index, fake_encoder, tmp_path, access_log) -> None:
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps({"name": "half", "candidate_share": 0.5}))
    port = free_port()
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, experiment=path, metrics_port=port)
    with running_server(Services(searcher=Searcher(tiny_index, fake_encoder)), config) as address:
        stub = search_pb2_grpc.SearchServiceStub(grpc.insecure_channel(address))
        arms = [
            stub.Search(search_pb2.SearchRequest(query="cat", session_id=f"u{i}"), timeout=10).arm for i in range(40)
        ]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    logged = [line["arm"] for line in access_log if line["rpc"].endswith("/Search")]
    assert logged == [f"half/{arm}" for arm in arms]
    for arm in ("control", "candidate"):
        assert f'sleuth_experiment_requests_total{{arm="{arm}",experiment="half"}} {float(arms.count(arm))}' in text
