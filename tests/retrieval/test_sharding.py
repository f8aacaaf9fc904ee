"""Sharded search indexes: N shards answer exactly as one index of the same corpus."""

from __future__ import annotations

import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from artifacts import ArtifactNotFoundError, CorruptArtifactError, Manifest, sha256_file
from retrieval.bm25 import BM25Config, BM25Index
from retrieval.bm25_stats import BM25Statistics, build_shard_bm25
from retrieval.dense import DenseIndex, FaissConfig
from retrieval.errors import DataFormatError, IndexBuildError, ShardsUnavailableError
from retrieval.fusion import FusionConfig
from retrieval.index import SearchIndex
from retrieval.pipeline import Searcher, SearchRequest
from retrieval.rerank_features import candidate_features
from retrieval.sharding import ShardedSearchIndex, partition
from retrieval.shards import IndexShard, LocalShard, concurrent, record_missing
from retrieval.tokenization import Tokenizer
from tests.conftest import TINY_KEYWORDS, FakeEncoder

SUBJECTS = ["cat", "kitten", "feline", "dog", "canine", "wolf", "bird", "fish", "pet", "parrot", "goldfish"]
FILLER = ["small", "loyal", "wild", "young", "water", "house", "packs", "feathers", "mice", "tanks", "clean", "often"]
QUERIES = ["cat", "a young kitten", "wild wolf packs", "dog and cat", "clean fish tanks", "parrot feathers", "pet"]


def medium_docs() -> list[dict[str, str]]:
    """42 small animal documents, generated deterministically; the last four repeat earlier ones
    under new ids, so equal scores (ties) occur in every retriever."""
    rng = random.Random(20)
    docs = []
    for i in range(38):
        words = rng.choices(SUBJECTS, k=rng.randint(1, 4)) + rng.choices(FILLER, k=rng.randint(2, 9))
        rng.shuffle(words)
        docs.append({"_id": f"d{i:02d}", "title": rng.choice(SUBJECTS).title(), "text": " ".join(words)})
    for i, source in enumerate((3, 11, 20, 30)):
        docs.append({**docs[source], "_id": f"copy{i}"})
    return docs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in medium_docs()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def encoder() -> FakeEncoder:
    return FakeEncoder(TINY_KEYWORDS)


@pytest.fixture(scope="module")
def unsharded(corpus: Path, encoder: FakeEncoder, tmp_path_factory) -> SearchIndex:
    return SearchIndex.build(corpus, tmp_path_factory.mktemp("one") / "index", encoder)


@pytest.fixture(scope="module")
def sharded(corpus: Path, encoder: FakeEncoder, tmp_path_factory) -> dict[int, SearchIndex]:
    """Sharded builds of the corpus, opened again from disk (the load path under test)."""
    root = tmp_path_factory.mktemp("sharded")
    built = {}
    for count in (1, 2, 3):
        ShardedSearchIndex.build(corpus, root / f"s{count}", encoder, shards=count)
        built[count] = SearchIndex.load(root / f"s{count}")
    return built


def _ranking(index: SearchIndex, encoder: FakeEncoder, request: SearchRequest) -> list[tuple[str, float]]:
    return [(h.doc_id, h.score) for h in Searcher(index, encoder).search(request).hits]


def test_partition_is_consecutive_and_balanced() -> None:
    assert partition(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert partition(42, 1) == [(0, 42)]
    assert [stop - start for start, stop in partition(42, 5)] == [9, 9, 8, 8, 8]


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_sharded_search_equals_unsharded(
    unsharded: SearchIndex, sharded: dict[int, SearchIndex], encoder: FakeEncoder, count: int, mode: str
) -> None:
    index = sharded[count]
    assert isinstance(index, ShardedSearchIndex) and len(index.shards) == count
    compared = 0
    for query in QUERIES:
        for k in (1, 3, 7, 20, 42, 100):
            for fusion in (FusionConfig(depth=5), FusionConfig(), FusionConfig(method="convex", depth=8)):
                request = SearchRequest(query, top_k=k, mode=mode, fusion=fusion)
                expected = _ranking(unsharded, encoder, request)
                got = _ranking(index, encoder, request)
                assert [d for d, _ in got] == [d for d, _ in expected], (query, k, fusion)
                assert np.allclose([s for _, s in got], [s for _, s in expected], rtol=0, atol=1e-6)
                compared += len(expected)
    assert compared > 500  # the comparison saw real lists, not empty ones


def test_bm25_scores_are_bit_identical(unsharded: SearchIndex, sharded: dict[int, SearchIndex]) -> None:
    for query in QUERIES:
        expected = unsharded.bm25.search(query, 42)
        assert expected
        assert sharded[3].bm25.search(query, 42) == expected  # Hit equality: ids and float scores


def test_ties_are_broken_by_corpus_position(unsharded: SearchIndex, sharded: dict[int, SearchIndex]) -> None:
    # copy0 repeats d03 (in another shard when there are three): equal scores, corpus order.
    query = " ".join(medium_docs()[3]["text"].split()[:3])
    for index in (unsharded, sharded[3]):
        hits = index.bm25.search(query, 42)
        ids = [h.doc_id for h in hits]
        scores = {h.doc_id: h.score for h in hits}
        assert scores["d03"] == scores["copy0"]
        tied = [d for d in ids if scores[d] == scores["d03"]]
        positions = [index.position(d) for d in tied]
        assert positions == sorted(positions)
    # A cut inside a run of equal dense scores keeps the earliest documents, sharded or not.
    vector = FakeEncoder(TINY_KEYWORDS).encode([medium_docs()[3]["title"] + "\n" + medium_docs()[3]["text"]])
    full = unsharded.dense.search(vector, 42)[0]
    ties = [h for h in full if h.score == full[0].score]
    assert len(ties) >= 2
    cut = unsharded.dense.search(vector, len(ties) - 1)[0]
    assert cut == full[: len(ties) - 1] == sharded[3].dense.search(vector, len(ties) - 1)[0]


def test_reranker_features_are_the_same(
    unsharded: SearchIndex, sharded: dict[int, SearchIndex], encoder: FakeEncoder
) -> None:
    request = SearchRequest("young kitten and cat", top_k=30, mode="hybrid")
    vector = encoder.encode([request.query])[0]
    hits = Searcher(unsharded, encoder).search(request).hits
    expected = candidate_features(request.query, hits, unsharded, vector)
    got = candidate_features(request.query, hits, sharded[3], vector)
    assert expected.shape[0] == len(hits) > 10
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_shard_bm25_matrix_equals_the_unsharded_matrix() -> None:
    texts = [f"{d['title']}\n{d['text']}" for d in medium_docs()]
    ids = [d["_id"] for d in medium_docs()]
    tokenizer = Tokenizer()
    for method in ("lucene", "robertson", "bm25+"):
        config = BM25Config(method=method)
        full = BM25Index.build(texts, ids, config, tokenizer)
        tokens = tokenizer.tokenize_many(texts)
        stats = BM25Statistics.from_tokens(tokens)
        one = build_shard_bm25(tokens, ids, stats, config, tokenizer)
        for query in QUERIES:
            assert np.array_equal(one.scores(query), full.scores(query)), method
        head = build_shard_bm25(tokens[:20], ids[:20], stats, config, tokenizer)
        tail = build_shard_bm25(tokens[20:], ids[20:], stats, config, tokenizer)
        for query in QUERIES:
            joined = np.concatenate([head.scores(query), tail.scores(query)])
            assert np.array_equal(joined, full.scores(query)), method


def test_parent_manifest_lists_every_shard_and_file(sharded: dict[int, SearchIndex]) -> None:
    index = sharded[3]
    manifest = Manifest.read(index.path, kind="search-index")
    assert manifest.format_version == 2
    entries = manifest.params["sharding"]["shards"]
    assert [e["name"] for e in entries] == ["shard-000", "shard-001", "shard-002"]
    assert [e["doc_count"] for e in entries] == [14, 14, 14]
    assert [e["start"] for e in entries] == [0, 14, 28]
    for entry in entries:
        shard_manifest = Manifest.read(index.path / entry["name"], kind="search-index-shard")
        assert shard_manifest.content_id == entry["content_id"] == manifest.parents[entry["name"]]
        for name, digest in shard_manifest.files.items():
            assert manifest.files[f"{entry['name']}/{name}"] == digest == sha256_file(index.path / entry["name"] / name)
    assert manifest.stats["doc_count"] == 42
    assert manifest.stats["bm25_statistics"]["doc_count"] == 42
    assert manifest.parents["encoder"] == index.encoder_info["checksum"]


def test_same_corpus_gives_the_same_content_id(corpus: Path, encoder: FakeEncoder, tmp_path: Path, sharded) -> None:
    again = ShardedSearchIndex.build(corpus, tmp_path / "again", encoder, shards=3)
    assert again.version == sharded[3].version


def _copy(index: SearchIndex, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(index.path, target)
    return target


def test_a_corrupt_shard_file_is_named(sharded: dict[int, SearchIndex], tmp_path: Path) -> None:
    path = _copy(sharded[3], tmp_path)
    faiss_file = path / "shard-001" / "dense.faiss"
    data = bytearray(faiss_file.read_bytes())
    data[-1] ^= 0xFF
    faiss_file.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match=r"shard shard-001: shard-001/dense.faiss: checksum mismatch"):
        SearchIndex.load(path)


def test_a_missing_shard_is_named(sharded: dict[int, SearchIndex], tmp_path: Path) -> None:
    path = _copy(sharded[3], tmp_path)
    shutil.rmtree(path / "shard-002")
    with pytest.raises(ArtifactNotFoundError, match="shard shard-002 is missing"):
        SearchIndex.load(path)


def test_a_swapped_shard_manifest_is_refused(sharded: dict[int, SearchIndex], tmp_path: Path) -> None:
    path = _copy(sharded[3], tmp_path)
    shutil.copy(path / "shard-000" / "manifest.json", path / "shard-001" / "manifest.json")
    with pytest.raises(CorruptArtifactError, match="shard shard-001: its manifest lists other files"):
        SearchIndex.load(path)


@pytest.mark.parametrize("count", [0, -1, 43])
def test_shard_count_must_fit_the_corpus(corpus: Path, tmp_path: Path, count: int) -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)
    with pytest.raises(IndexBuildError, match="shards: "):
        ShardedSearchIndex.build(corpus, tmp_path / "out", encoder, shards=count)
    assert not (tmp_path / "out").exists() and encoder.calls == []
    assert list(tmp_path.iterdir()) == []  # no staging directory left either


def test_ivfpq_with_too_few_documents_fails_before_embedding(corpus: Path, tmp_path: Path) -> None:
    encoder = FakeEncoder(TINY_KEYWORDS)  # 10 dimensions
    config = FaissConfig("ivfpq", ivf_nlist=4, pq_m=5, pq_nbits=4, ivf_nprobe=2)  # needs 16 vectors per shard
    with pytest.raises(IndexBuildError, match="ivfpq cannot train on the smallest of 3 shards: 14 vectors"):
        ShardedSearchIndex.build(corpus, tmp_path / "out", encoder, shards=3, faiss_config=config)
    assert not (tmp_path / "out").exists() and encoder.calls == []
    with pytest.raises(IndexBuildError, match="m=3 does not divide the vector dimension 10"):
        DenseIndex.build(np.eye(20, 10, dtype=np.float32), [str(i) for i in range(20)], FaissConfig("ivfpq", pq_m=3))
    built = ShardedSearchIndex.build(corpus, tmp_path / "ok", encoder, shards=2, faiss_config=config)
    assert SearchIndex.load(tmp_path / "ok").dense.config == config
    assert built.dense.search(encoder.encode(["cat"]), 5)[0]


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, dim))
    points = centers[rng.integers(0, 40, size=n)] + 0.35 * rng.normal(size=(n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def _recall(approximate: DenseIndex, exact: DenseIndex, queries: np.ndarray, k: int) -> float:
    found = [{h.doc_id for h in hits} for hits in approximate.search(queries, k)]
    truth = [{h.doc_id for h in hits} for hits in exact.search(queries, k)]
    return float(np.mean([len(f & t) / k for f, t in zip(found, truth, strict=True)]))


def test_ivfpq_recall_against_flat(tmp_path: Path) -> None:
    vectors = _clustered(3000, 64, seed=1)
    queries = _clustered(100, 64, seed=2)
    ids = [f"v{i}" for i in range(len(vectors))]
    exact = DenseIndex.build(vectors, ids, FaissConfig("flat"))
    all_cells = FaissConfig("ivfpq", ivf_nlist=32, pq_m=32, pq_nbits=8, ivf_nprobe=32)
    few_cells = FaissConfig("ivfpq", ivf_nlist=32, pq_m=32, pq_nbits=8, ivf_nprobe=4)
    full = DenseIndex.build(vectors, ids, all_cells)
    # Measured on this set: recall@10 0.876 probing all 32 cells (what product quantization alone
    # loses), 0.767 probing 4, 0.573 probing 1; random results would score 10/3000. The floors sit
    # below the measurements, by margins that leave FAISS versions room but not a broken index.
    assert _recall(full, exact, queries, 10) >= 0.85
    full.save(tmp_path)
    reloaded = DenseIndex.load(tmp_path, ids, few_cells)  # nprobe comes from the config, not the file
    assert reloaded._index.nprobe == 4
    fewer = _recall(reloaded, exact, queries, 10)
    assert 0.74 <= fewer < _recall(full, exact, queries, 10)
    # Reconstructed vectors are the quantized ones: close to, not equal to, the originals.
    cosine = np.sum(reloaded.vectors(np.arange(50)) * vectors[:50], axis=1)
    assert cosine.min() > 0.9


def test_local_shard_implements_the_shard_interface(sharded: dict[int, SearchIndex]) -> None:
    shard = sharded[2].shards[1]
    assert isinstance(shard, LocalShard) and isinstance(shard, IndexShard)
    hits = shard.bm25_top(["cat"], 5)
    assert hits and {h.doc_id for h in hits} <= set(shard.bm25.doc_ids)


def test_a_concurrent_scatter_gives_the_same_results(
    sharded: dict[int, SearchIndex], unsharded: SearchIndex, encoder: FakeEncoder
) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        index = ShardedSearchIndex.load(sharded[3].path, scatter=concurrent(pool))
        for query in QUERIES:
            request = SearchRequest(query, top_k=15, mode="hybrid")
            assert _ranking(index, encoder, request) == _ranking(unsharded, encoder, request)


def test_faiss_config_round_trips_and_keeps_ivfpq_keys_out_of_other_types() -> None:
    for config in (FaissConfig(), FaissConfig("hnsw", hnsw_m=16), FaissConfig("ivfpq", ivf_nlist=8, pq_m=4)):
        assert FaissConfig.from_dict(config.to_dict()) == config
    assert "ivf_nlist" not in FaissConfig("hnsw").to_dict()  # readable by code that predates ivfpq
    assert FaissConfig("ivfpq", ivf_nprobe=3).to_dict()["ivf_nprobe"] == 3


def test_empty_documents_are_indexed_as_unsharded_and_refused_with_strict(encoder: FakeEncoder, tmp_path: Path) -> None:
    docs = medium_docs()
    docs[5] = {"_id": docs[5]["_id"], "title": "", "text": ""}
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    one = SearchIndex.build(path, tmp_path / "one", encoder)
    three = ShardedSearchIndex.build(path, tmp_path / "three", encoder, shards=3)
    assert one.manifest.stats["empty_documents"] == three.manifest.stats["empty_documents"] == 1
    for query in QUERIES:
        for mode in ("bm25", "dense", "hybrid"):
            request = SearchRequest(query=query, top_k=42, mode=mode)
            ranking = _ranking(three, encoder, request)
            assert ranking == _ranking(one, encoder, request)
            assert docs[5]["_id"] not in [doc_id for doc_id, score in ranking if score > 0]
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:6"):
        ShardedSearchIndex.build(path, tmp_path / "strict", encoder, shards=3, strict=True)
    assert not (tmp_path / "strict").exists()


class _Unreachable:
    """Stands for a remote shard whose replicas are all gone: it records itself and answers empty."""

    def __init__(self, shard: LocalShard) -> None:
        self.name, self.doc_count, self.documents = shard.name, shard.doc_count, shard.documents
        self.dimension = shard.dense.dimension

    def bm25_top(self, query_tokens, k):
        record_missing(self.name)
        return []

    def dense_top(self, query_vectors, k):
        record_missing(self.name)
        return [[] for _ in range(len(query_vectors))]

    def bm25_contributions(self, term_ids, positions):
        record_missing(self.name)
        return np.zeros((len(term_ids), len(positions)), dtype=np.float32)

    def document_frequencies(self, term_ids):
        record_missing(self.name)
        return np.zeros(len(term_ids), dtype=np.int64)

    def dense_vectors(self, positions):
        record_missing(self.name)
        return np.zeros((len(positions), self.dimension), dtype=np.float32)


def test_opened_shards_answer_as_loaded_ones_and_a_silent_shard_is_named(
    sharded: dict[int, SearchIndex], encoder: FakeEncoder
) -> None:
    path = sharded[3].path
    assert path is not None
    config = FaissConfig.from_dict(sharded[3].manifest.params["faiss"])
    opened: list[str] = []

    def open_local(directory: Path, name: str, documents: list) -> IndexShard:
        opened.append(name)
        shard = LocalShard.load(directory, config, name=name)
        assert [d.doc_id for d in documents] == [d.doc_id for d in shard.documents]
        return shard

    with ThreadPoolExecutor(3) as pool:
        same = ShardedSearchIndex.load(path, open_shard=open_local, scatter=concurrent(pool))
        assert opened == ["shard-000", "shard-001", "shard-002"]
        for mode in ("bm25", "dense", "hybrid"):
            request = SearchRequest("dog and cat", top_k=20, mode=mode)
            result = Searcher(same, encoder).search(request)
            assert result.missing_shards == ()
            assert [(h.doc_id, h.score) for h in result.hits] == _ranking(sharded[3], encoder, request)

        def second_down(directory: Path, name: str, documents: list) -> IndexShard:
            shard = LocalShard.load(directory, config, name=name)
            return _Unreachable(shard) if name == "shard-001" else shard  # type: ignore[return-value]

        partial = ShardedSearchIndex.load(path, open_shard=second_down, scatter=concurrent(pool))
        lost = {d.doc_id for d in partial.shards[1].documents}
        for mode in ("bm25", "dense", "hybrid"):
            request = SearchRequest("dog and cat", top_k=42, mode=mode)
            result = Searcher(partial, encoder).search(request)
            assert result.missing_shards == ("shard-001",)
            full = _ranking(sharded[3], encoder, request)
            got = [(h.doc_id, h.score) for h in result.hits]
            assert got and not lost & {d for d, _ in got}
            if mode != "hybrid":  # one retriever: exactly the full list without the silent shard's documents
                assert got == [(d, s) for d, s in full if d not in lost]


def test_no_shard_answering_is_an_error_not_an_empty_result(
    sharded: dict[int, SearchIndex], encoder: FakeEncoder
) -> None:
    path = sharded[2].path
    assert path is not None
    config = FaissConfig.from_dict(sharded[2].manifest.params["faiss"])
    dead = ShardedSearchIndex.load(
        path,
        open_shard=lambda d, n, docs: _Unreachable(LocalShard.load(d, config, name=n)),  # type: ignore[arg-type,return-value]
    )
    with pytest.raises(ShardsUnavailableError, match=r"no shard answered \(shard-000, shard-001\)"):
        Searcher(dead, encoder).search(SearchRequest("dog and cat", mode="bm25"))


def test_an_unsharded_index_opened_as_one_shard_answers_as_itself(
    unsharded: SearchIndex, encoder: FakeEncoder, tmp_path: Path
) -> None:
    """What ``serve --ray`` serves for an unsharded index: one shard whose directory is the index's."""
    assert unsharded.path is not None
    faiss = FaissConfig.from_dict(Manifest.read(unsharded.path).params["faiss"])
    opened: list[str] = []

    def open_shard(directory: Path, name: str, documents: list) -> LocalShard:
        opened.append(name)
        return LocalShard.load(directory, faiss, name=name)

    single = ShardedSearchIndex.load_single(unsharded.path, open_shard)
    assert opened == ["shard-000"] and single.version == unsharded.version and len(single) == len(unsharded)
    for mode in ("bm25", "dense", "hybrid"):
        for query in QUERIES:
            request = SearchRequest(query, top_k=15, mode=mode)
            expected = _ranking(unsharded, encoder, request)
            got = _ranking(single, encoder, request)
            assert [d for d, _ in got] == [d for d, _ in expected] != []
            assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-6)

    copy = tmp_path / "copy"
    shutil.copytree(unsharded.path, copy)
    (copy / "docs.jsonl").write_text((copy / "docs.jsonl").read_text().replace("wolf", "wolv"))
    with pytest.raises(CorruptArtifactError, match=r"docs\.jsonl: checksum mismatch"):
        ShardedSearchIndex.load_single(copy, open_shard)
