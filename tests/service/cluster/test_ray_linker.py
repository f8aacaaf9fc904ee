"""``serve --ray --kb``: the linker as the Serve application ``sleuth:<model>:linker``.

The Link servicer calls a :class:`RemoteLinker` in place of the in-process linker, so the answers must
be those of the same KB linked in one process; a replica killed under load is retried on the other;
a linker with no application left answers UNAVAILABLE. Texts come from the demo's own documents.
"""

from __future__ import annotations

import functools
import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from linking import EntityLinker
from retrieval.pipeline import Searcher
from service.cli import main
from service.cluster.serve_linker import PRIOR_BASELINE, RayLinkerServing, linker_app_name
from service.cluster.serve_shards import deployed_versions, serve
from service.demo import demo_kb_dir
from service.generated.sleuth.v1 import linking_pb2, linking_pb2_grpc
from service.serving.linker import LoadedLinker
from service.serving.loading import Services
from tests.conftest import TINY_KEYWORDS, FakeEncoder
from tests.service.conftest import running_server

pytestmark = pytest.mark.ray

TEXTS = [json.loads(line)["text"] for line in (demo_kb_dir() / "train.jsonl").read_text().splitlines()[:6]]


def _links(reply: linking_pb2.LinkResponse) -> list[tuple[int, int, str, float]]:
    return [(m.start, m.end, m.entity_id, m.score) for m in reply.mentions]


def test_ray_linker_links_like_the_local_one_and_survives_a_killed_replica(
    ray_cluster, tiny_index, tmp_path: Path, capsys
) -> None:
    demo = demo_kb_dir()
    kb = tmp_path / "kb"
    build = ["kb", "build", "--entities", str(demo / "entities.jsonl"), "--aliases", str(demo / "aliases.tsv")]
    assert main([*build, "--out", str(kb)]) == 0
    capsys.readouterr()
    local = EntityLinker.open(kb, None, FakeEncoder(TINY_KEYWORDS))
    serving = RayLinkerServing(replicas=2, cpus_per_replica=0.05, timeout_s=30.0)
    try:
        remote, kb_version, model_version = serving.load(
            kb, None, functools.partial(EntityLinker.open, str(kb), None, FakeEncoder(TINY_KEYWORDS))
        )
        assert model_version == PRIOR_BASELINE and kb_version.startswith("kb@")
        assert linker_app_name(model_version) in serve.status().applications
        assert deployed_versions() == {}  # the linker is not an index version
        for text in TEXTS:
            expected = [(x.mention.start, x.mention.end, x.entity_id, x.score) for x in local.link(text)]
            got = [(x.mention.start, x.mention.end, x.entity_id, x.score) for x in remote.link(text)]
            assert [g[:3] for g in got] == [e[:3] for e in expected]
            assert any(e[2] is not None for e in expected)
            assert [g[3] for g in got] == pytest.approx([e[3] for e in expected], abs=1e-6)

        loaded = LoadedLinker(remote, kb_version, model_version)  # type: ignore[arg-type]
        services = Services(Searcher(tiny_index, FakeEncoder(TINY_KEYWORDS)), loaded)
        with running_server(services) as address, grpc.insecure_channel(address) as channel:
            stub = linking_pb2_grpc.LinkingServiceStub(channel)
            first = stub.Link(linking_pb2.LinkRequest(text=TEXTS[0]), timeout=60)
            assert first.model_version == PRIOR_BASELINE and first.kb_version == kb_version
            expected_first = [(x.mention.start, x.mention.end, x.entity_id or "") for x in local.link(TEXTS[0])]
            assert [(m.start, m.end, m.entity_id) for m in first.mentions] == expected_first
            assert {m.name for m in first.mentions if not m.nil} >= {"Michael Jordan"}

            with pytest.raises(grpc.RpcError) as bad:
                stub.Link(linking_pb2.LinkRequest(text=""), timeout=30)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            # SIGKILL one of the two replicas while 16 clients link: no request fails.
            victim = serve.get_app_handle(linker_app_name(model_version)).pid.remote().result(timeout_s=30)

            def one(i: int) -> list[tuple[int, int, str, float]]:
                if i == 20:
                    os.kill(victim, signal.SIGKILL)
                return _links(stub.Link(linking_pb2.LinkRequest(text=TEXTS[i % len(TEXTS)]), timeout=60))

            with ThreadPoolExecutor(16) as clients:
                outcomes = list(clients.map(one, range(120)))
            spans = {t: [(x.mention.start, x.mention.end, x.entity_id or "") for x in local.link(t)] for t in TEXTS}
            for i, got in enumerate(outcomes):
                assert [g[:3] for g in got] == spans[TEXTS[i % len(TEXTS)]] != []
            with pytest.raises(ProcessLookupError):
                os.kill(victim, 0)  # the replica did die under load

            serving.close()  # no linker application left: UNAVAILABLE, never INTERNAL
            with pytest.raises(grpc.RpcError) as gone:
                stub.Link(linking_pb2.LinkRequest(text=TEXTS[0]), timeout=60)
            assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "linker" in (gone.value.details() or "")
    finally:
        serving.close()
