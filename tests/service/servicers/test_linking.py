"""LinkingService through a real server on port 0: the tiny KB with the fake encoder, and the demo."""

from __future__ import annotations

import urllib.request

import grpc
import pytest

from artifacts.registry import Registry
from linking import (
    Disambiguator,
    DisambiguatorConfig,
    EntityLinker,
    KnowledgeBase,
    MentionDetector,
    load_spacy,
    prepare_documents,
    train_disambiguator,
)
from linking.drift import LINKING_FEATURES, linking_reference
from retrieval.drift import Histogram
from retrieval.pipeline import Searcher
from service.config import ServerConfig
from service.generated.sleuth.v1 import admin_pb2, admin_pb2_grpc, linking_pb2, linking_pb2_grpc
from service.serving.linker import LoadedLinker, load_linker
from service.serving.loading import Services
from tests.conftest import FakeEncoder
from tests.linking.conftest import ALIASES, ENTITIES, KEYWORDS
from tests.linking.test_pipeline import TRAIN
from tests.service.conftest import running_server
from tests.service.lifecycle_helpers import free_port


def call(address: str, request: linking_pb2.LinkRequest) -> linking_pb2.LinkResponse:
    with grpc.insecure_channel(address) as channel:
        return linking_pb2_grpc.LinkingServiceStub(channel).Link(request, timeout=30)


def test_link_with_given_spans_returns_entities_and_candidates(linking_server: str) -> None:
    text = "Michael Jordan starred in Creed, a film."
    response = call(
        linking_server,
        linking_pb2.LinkRequest(
            text=text,
            mentions=[linking_pb2.MentionSpan(start=0, end=14)],
            options=linking_pb2.LinkOptions(top_candidates=3),
        ),
    )
    assert (response.kb_version, response.model_version) == ("kb@tiny", "linker@tiny")
    [mention] = response.mentions
    assert (mention.start, mention.end, mention.surface) == (0, 14, "Michael Jordan")
    assert mention.entity_id == "Michael B. Jordan" and mention.name == "Michael B. Jordan" and not mention.nil
    assert len(mention.candidates) == 3 and mention.candidates[0].entity_id == "Michael B. Jordan"
    assert mention.candidates[0].score >= mention.candidates[1].score


def test_link_detects_mentions_without_spans(linking_server: str) -> None:
    response = call(linking_server, linking_pb2.LinkRequest(text="Yesterday Michael Jordan visited Paris."))
    assert {m.surface for m in response.mentions} >= {"Michael Jordan", "Paris"}
    assert all(m.label for m in response.mentions)


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (linking_pb2.LinkRequest(text=""), "text"),
        (linking_pb2.LinkRequest(text="Paris", mentions=[linking_pb2.MentionSpan(start=2, end=40)]), "mentions[0]"),
        (
            linking_pb2.LinkRequest(text="Paris", options=linking_pb2.LinkOptions(top_candidates=500)),
            "options.top_candidates",
        ),
        (
            linking_pb2.LinkRequest(text="Paris", options=linking_pb2.LinkOptions(nil_threshold=-1)),
            "options.nil_threshold",
        ),
    ],
)
def test_bad_requests_are_invalid_argument_naming_the_field(linking_server: str, request_message, field) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(linking_server, request_message)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field)


@pytest.mark.integration
def test_demo_linker_tells_the_michael_jordans_apart(real_encoder) -> None:
    """The default ``sleuth serve`` linker (demo KB, model trained on the demo's own documents)."""
    loaded = load_linker(real_encoder)
    actor = loaded.linker.link("Michael Jordan starred in Creed.")
    player = loaded.linker.link("Michael Jordan won six NBA titles with the Bulls.")
    assert actor[0].mention.surface == "Michael Jordan" and actor[0].entity_id == "Michael B. Jordan"
    assert player[0].mention.surface == "Michael Jordan" and player[0].entity_id == "Michael Jordan"
    professor = loaded.linker.link("Michael Jordan teaches machine learning at Berkeley.")
    assert professor[0].entity_id == "Michael I. Jordan"


def test_link_drift_and_nil_counts_reach_metrics(tiny_index, fake_encoder) -> None:
    """A linker with a training-time reference: texts with no entities at all shift mentions/doc."""
    kb = KnowledgeBase(ENTITIES, ALIASES)
    linker = EntityLinker(kb, FakeEncoder(KEYWORDS), detector=MentionDetector(load_spacy()))
    linker.scorer = train_disambiguator(
        prepare_documents(linker, TRAIN, "tiny"), DisambiguatorConfig(model_type="logistic")
    )
    # Reference: training documents carry 1 to 4 mentions each and are rarely NIL.
    reference = {
        "mentions_per_doc": Histogram.from_values([1, 2, 2, 3, 3, 3, 4, 4, 2, 1]),
        "nil_rate": Histogram.from_values([0.0] * 9 + [0.5]),
    }
    loaded = LoadedLinker(linker, "kb@tiny", "linker@tiny", reference)
    port = free_port()
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, metrics_port=port)
    services = Services(searcher=Searcher(tiny_index, fake_encoder), linker=loaded)
    with running_server(services, config) as address:
        for _ in range(60):
            call(address, linking_pb2.LinkRequest(text="the weather was mild and nothing happened at all"))
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'sleuth_drift_alert{feature="mentions_per_doc"} 1.0' in text
    assert "sleuth_link_mentions_total" in text


def test_linking_reference_covers_both_features() -> None:
    kb = KnowledgeBase(ENTITIES, ALIASES)
    linker = EntityLinker(kb, FakeEncoder(KEYWORDS), detector=MentionDetector(load_spacy()))
    reference = linking_reference(linker, TRAIN, sample=10)
    assert set(reference) == set(LINKING_FEATURES)
    assert all(abs(sum(h.proportions) - 1.0) < 1e-9 for h in reference.values())


def test_activate_swaps_the_linker_model_and_rollback_restores_it(tiny_index, fake_encoder, tmp_path) -> None:
    """Linker versions in the registry: Activate and Rollback reach the Link RPC (hot swap)."""
    kb = KnowledgeBase(ENTITIES, ALIASES)
    linker = EntityLinker(kb, FakeEncoder(KEYWORDS), detector=MentionDetector(load_spacy()))
    prepared = prepare_documents(linker, TRAIN, "tiny")
    registry = Registry.open(tmp_path / "registry")
    versions = []
    for model_type in ("logistic", "lightgbm"):
        model = train_disambiguator(prepared, DisambiguatorConfig(model_type=model_type))
        publication = registry.publish(
            "linker", lambda out, m=model, t=model_type: m.save(out, parents={}, params={"t": t}, inputs={})
        )
        versions.append(publication.info.version)
    registry.activate(versions[0])  # what is served at start is the registry's active version
    first_model, _ = Disambiguator.load(registry.get(versions[0]).path)
    linker.scorer = first_model
    loaded = LoadedLinker(linker, "kb@tiny", versions[0])
    config = ServerConfig(host="127.0.0.1", port=0, threads=2, registry=tmp_path / "registry", registry_poll_seconds=0)
    services = Services(searcher=Searcher(tiny_index, fake_encoder), linker=loaded)
    text = linking_pb2.LinkRequest(text=TRAIN[0].text)
    with running_server(services, config) as address:
        assert call(address, text).model_version == versions[0]
        with grpc.insecure_channel(address) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            assert admin.Activate(admin_pb2.ActivateRequest(version=versions[1]), timeout=60).version == versions[1]
            swapped = call(address, text)
            assert (swapped.model_version, swapped.kb_version) == (versions[1], "kb@tiny")
            admin.Rollback(admin_pb2.RollbackRequest(kind="linker"), timeout=60)
        assert call(address, text).model_version == versions[0]


def test_link_drift_follows_the_served_model_reference_across_a_swap() -> None:
    """After a model swap, drift is measured against the new model's reference, from zero."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from retrieval.drift import DriftMonitor
    from service.servicers.linking import LinkingServicer
    from service.serving.state import ServingState

    kb = KnowledgeBase(ENTITIES, ALIASES)
    linker = EntityLinker(kb, FakeEncoder(KEYWORDS), detector=MentionDetector(load_spacy()))
    old_reference = {"mentions_per_doc": Histogram.from_values([1, 2, 3, 4])}
    new_reference = {"mentions_per_doc": Histogram.from_values([0, 0, 0, 1]), "nil_rate": Histogram.from_values([0.0])}
    state = ServingState("linker", LoadedLinker(linker, "kb@tiny", "linker@a", old_reference), "linker@a")
    monitor = DriftMonitor(old_reference)

    class Context:
        async def abort(self, code, details):
            raise AssertionError(details)

    async def link(servicer: LinkingServicer) -> None:
        await servicer.Link(linking_pb2.LinkRequest(text="Paris is lovely in spring."), Context())

    servicer = LinkingServicer(state, ThreadPoolExecutor(1), monitor)
    asyncio.run(link(servicer))
    assert monitor.reference == old_reference and monitor._counts["mentions_per_doc"].sum() == 1
    state.swap(LoadedLinker(linker, "kb@tiny", "linker@b", new_reference), "linker@b")
    asyncio.run(link(servicer))
    assert monitor.reference == new_reference
    assert monitor._counts["mentions_per_doc"].sum() == 1 and monitor._counts["nil_rate"].sum() == 1
