"""The registry: publishing, the active pointer, rollback, gc, metrics, and checksum refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifacts import CorruptArtifactError, IncompatibleArtifactError
from artifacts.errors import NoPreviousVersionError, VersionNotFoundError
from artifacts.registry import ACTIVE_FILE, REGISTRY_ENV, Registry, default_registry_path
from retrieval.bm25 import BM25Config
from retrieval.index import SearchIndex


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry.open(tmp_path / "registry")


def publish(registry: Registry, corpus: Path, encoder, k1: float = 0.9):
    return registry.publish(
        "search-index", lambda out: SearchIndex.build(corpus, out, encoder, bm25_config=BM25Config(k1=k1))
    )


def test_default_location_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    assert default_registry_path() == Path("var/registry")
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "elsewhere"))
    assert default_registry_path() == tmp_path / "elsewhere"


def test_publish_makes_an_immutable_content_addressed_version(registry, tiny_corpus, fake_encoder) -> None:
    built = publish(registry, tiny_corpus, fake_encoder)
    info = built.info
    assert built.created and isinstance(built.result, SearchIndex)
    assert info.version == built.result.version == f"search-index@{info.content_id}"
    assert info.path == registry.root / "search-index" / info.content_id
    assert SearchIndex.load(info.path).version == info.version
    lineage = info.manifest
    assert lineage.inputs["corpus"]["sha256"] and lineage.parents["encoder"] == fake_encoder.checksum
    assert lineage.params["bm25"]["k1"] == 0.9 and "numpy" in lineage.libraries
    # Same inputs and parameters: the same version, not a second copy.
    again = publish(registry, tiny_corpus, fake_encoder)
    assert not again.created and again.info.version == info.version
    assert [v.version for v in registry.versions()] == [info.version]
    # Nothing left behind: no staging directory, no lock.
    assert sorted(p.name for p in (registry.root / "search-index").iterdir()) == [".lock", ".locks", info.content_id]
    assert not any((registry.root / "search-index" / ".locks").iterdir())


def test_a_failed_build_publishes_nothing(registry) -> None:
    def broken(out: Path) -> None:
        out.mkdir()
        (out / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        registry.publish("search-index", broken)
    assert registry.versions() == []
    assert [p.name for p in (registry.root / "search-index").iterdir() if p.name.startswith(".staging")] == []


def test_the_build_must_produce_the_announced_kind(registry, tiny_corpus, fake_encoder) -> None:
    with pytest.raises(IncompatibleArtifactError):
        registry.publish("reranker", lambda out: SearchIndex.build(tiny_corpus, out, fake_encoder))
    assert registry.versions() == []


def test_versions_are_found_by_name_id_or_prefix(registry, tiny_corpus, fake_encoder) -> None:
    info = publish(registry, tiny_corpus, fake_encoder).info
    for ref in (info.version, info.content_id, info.content_id[:6], info.content_id[:6].upper()):
        assert registry.get(ref).version == info.version
    for ref in ("search-index@ffffffff", "nope", "reranker@" + info.content_id):
        with pytest.raises(VersionNotFoundError):
            registry.get(ref)


def test_activate_rollback_and_history(registry, tiny_corpus, fake_encoder) -> None:
    v1, v2, v3 = (publish(registry, tiny_corpus, fake_encoder, k1).info.version for k1 in (0.9, 1.2, 1.5))
    assert registry.active("search-index") is None
    with pytest.raises(NoPreviousVersionError):
        registry.rollback("search-index")
    registry.activate(v1)
    registry.activate(v2)
    registry.activate(v3)
    pointer = registry.pointer("search-index")
    assert (pointer.version, pointer.history) == (v3, (v2, v1))
    assert registry.rollback("search-index").version == v2
    assert registry.rollback("search-index").version == v1
    with pytest.raises(NoPreviousVersionError):
        registry.rollback("search-index")
    registry.activate(v3)
    assert registry.previous("search-index").version == v1
    # The pointer file is plain JSON, rewritten whole.
    data = json.loads((registry.root / "search-index" / ACTIVE_FILE).read_text())
    assert data["version"] == v3 and data["history"] == [v1]


def test_activate_refuses_a_version_whose_files_fail_their_checksums(registry, tiny_corpus, fake_encoder) -> None:
    good = publish(registry, tiny_corpus, fake_encoder, 0.9).info
    bad = publish(registry, tiny_corpus, fake_encoder, 1.3).info
    registry.activate(good.version)
    with open(bad.path / "docs.jsonl", "ab") as handle:
        handle.write(b"tampered\n")
    with pytest.raises(CorruptArtifactError, match=r"docs\.jsonl: checksum mismatch"):
        registry.activate(bad.version)
    (bad.path / "dense.faiss").unlink()
    with pytest.raises(CorruptArtifactError, match=r"dense\.faiss: missing"):
        registry.activate(bad.version)
    assert registry.pointer("search-index").version == good.version


def test_rollback_refuses_a_damaged_previous_version(registry, tiny_corpus, fake_encoder) -> None:
    v1 = publish(registry, tiny_corpus, fake_encoder, 0.9).info
    v2 = publish(registry, tiny_corpus, fake_encoder, 1.3).info
    registry.activate(v1.version)
    registry.activate(v2.version)
    (v1.path / "docs.jsonl").write_text("")
    with pytest.raises(CorruptArtifactError):
        registry.rollback("search-index")
    assert registry.pointer("search-index").version == v2.version


def test_gc_keeps_the_newest_the_active_and_the_rollback_target(registry, tiny_corpus, fake_encoder) -> None:
    versions = [publish(registry, tiny_corpus, fake_encoder, k1).info.version for k1 in (0.6, 0.9, 1.2, 1.5, 1.8)]
    registry.activate(versions[0])
    registry.activate(versions[1])
    assert [v.version for v in registry.gc(keep=2, dry_run=True)] == [versions[2]]
    removed = registry.gc(keep=2)
    assert [v.version for v in removed] == [versions[2]]
    assert [v.version for v in registry.versions()] == [versions[0], versions[1], versions[3], versions[4]]
    # keep 0: only the active version and the one a rollback returns to survive.
    registry.activate(versions[3])
    registry.gc(keep=0)
    assert [v.version for v in registry.versions()] == [versions[1], versions[3]]
    # The rollback history no longer names deleted versions.
    assert registry.pointer("search-index").history == (versions[1],)
    assert registry.rollback("search-index").version == versions[1]


def test_metrics_attach_to_a_version_without_changing_it(registry, tiny_corpus, fake_encoder) -> None:
    info = publish(registry, tiny_corpus, fake_encoder).info
    manifest = registry.record_metrics(info.content_id[:8], "scifact/hybrid", {"ndcg@10": 0.71, "queries": 300})
    assert manifest.content_id == info.content_id
    stored = registry.get(info.version).manifest.metrics["scifact/hybrid"]
    assert stored["ndcg@10"] == 0.71 and stored["recorded_at"]
    registry.verify(registry.get(info.version))
    assert registry.find(info.path) is not None and registry.find(registry.root) is None
