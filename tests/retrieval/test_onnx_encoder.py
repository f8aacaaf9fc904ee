"""The ONNX Runtime encoders against the torch reference: same vectors (float32), close ones and the
same ranking quality (int8), their caches kept apart, and clear errors for what they cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.dense import EmbeddingCache, embed_documents
from retrieval.onnx_encoder import EncoderRuntimeError, _pooling_mode, load_encoder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def queries(scifact_train_dir: Path) -> list[str]:
    lines = (scifact_train_dir / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:200]]


def test_float32_graph_gives_the_torch_vectors(real_encoder, onnx_encoder, queries) -> None:
    expected = real_encoder.encode(queries)
    got = onnx_encoder.encode(queries)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert float((expected * got).sum(axis=1).min()) > 0.99999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # the same weights: an index built with the torch encoder accepts it for queries
    assert onnx_encoder.checksum == real_encoder.checksum
    assert onnx_encoder.runtime == "onnx"


def test_rows_come_back_in_input_order_whatever_the_lengths(onnx_encoder) -> None:
    texts = ["a much longer text about the chemistry of aspirin and its uses", "short", "a middling text here"]
    together = onnx_encoder.encode(texts)
    alone = np.stack([onnx_encoder.encode([t])[0] for t in texts])
    assert float((together * alone).sum(axis=1).min()) > 0.99999
    assert onnx_encoder.encode([]).shape == (0, onnx_encoder.dimension)


def test_int8_vectors_are_close_and_rank_scifact_as_well(
    real_encoder, int8_encoder, scifact_index, scifact_train_dir: Path
) -> None:
    from retrieval.corpus import load_qrels, load_queries
    from retrieval.evaluation import evaluate_run
    from retrieval.pipeline import Searcher, SearchRequest

    qrels = load_qrels(scifact_train_dir / "qrels" / "train.tsv")
    queries = [q for q in load_queries(scifact_train_dir / "queries.jsonl") if q.qid in qrels][:300]
    texts = [q.text for q in queries]
    cosines = (real_encoder.encode(texts) * int8_encoder.encode(texts)).sum(axis=1)
    assert cosines.mean() > 0.985 and cosines.min() > 0.95
    ndcg = {}
    for name, encoder in (("torch", real_encoder), ("int8", int8_encoder)):
        searcher = Searcher(scifact_index, encoder)
        requests = [SearchRequest(q.text, top_k=100, mode="dense") for q in queries]
        results = searcher.batch_search(requests)
        run = {q.qid: {h.doc_id: h.score for h in r.hits} for q, r in zip(queries, results, strict=True)}
        ndcg[name] = evaluate_run(run, qrels, ["ndcg@10"]).means["ndcg@10"]
    assert abs(ndcg["int8"] - ndcg["torch"]) < 0.01, ndcg


def test_float32_runtimes_share_one_document_entry_and_int8_has_its_own(
    real_encoder, onnx_encoder, int8_encoder, tmp_path: Path
) -> None:
    cache = EmbeddingCache(tmp_path)
    texts = ["first document", "second document"]
    torch_vectors = embed_documents(real_encoder, texts, cache=cache)
    # the torch runtime's entry is the float32 graph's: one content whichever float32 runtime came first
    assert onnx_encoder.cache_key == real_encoder.cache_key
    np.testing.assert_array_equal(embed_documents(onnx_encoder, texts, cache=cache), torch_vectors)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    int8_vectors = embed_documents(int8_encoder, texts, cache=cache)
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not np.array_equal(int8_vectors, torch_vectors)


def test_cold_float32_entries_hold_the_graph_vectors_whichever_runtime_fills_them(
    real_encoder, onnx_encoder, tmp_path: Path
) -> None:
    texts = ["aspirin lowers the risk of heart attacks", "a"]
    from_torch = embed_documents(real_encoder, texts, cache=EmbeddingCache(tmp_path / "a"))
    from_onnx = embed_documents(onnx_encoder, texts, cache=EmbeddingCache(tmp_path / "b"))
    np.testing.assert_array_equal(from_torch, from_onnx)
    np.testing.assert_array_equal(from_torch, onnx_encoder.encode(texts, batch_size=64))
    # and they are torch's vectors to a cosine of 0.9999
    assert (from_torch * real_encoder.encode(texts)).sum(axis=1).min() > 0.9999


def test_a_damaged_cached_graph_is_exported_again(
    onnx_encoder, private_caches: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (exported,) = (private_caches / "onnx").glob(f"{onnx_encoder.checksum}-onnx-????????.onnx")  # not the int8 graph
    (tmp_path / "onnx").mkdir()
    graph = tmp_path / "onnx" / exported.name
    graph.write_bytes(b"not an onnx graph")
    monkeypatch.setenv("SLEUTH_CACHE_DIR", str(tmp_path))
    again = load_encoder(runtime="onnx")
    assert graph.stat().st_size > 1_000_000
    vector = again.encode(["aspirin"])[0]
    assert float(vector @ onnx_encoder.encode(["aspirin"])[0]) > 0.99999


def test_unsupported_layouts_and_runtimes_are_refused() -> None:
    transformer = type("Transformer", (), {})()
    pooling = type("Pooling", (), {"get_config_dict": lambda self: {"pooling_mode": "max"}})()
    dense = type("Dense", (), {})()
    with pytest.raises(EncoderRuntimeError, match="mean or cls pooling"):
        _pooling_mode([transformer, pooling])
    with pytest.raises(EncoderRuntimeError, match="Transformer \\+ Pooling"):
        _pooling_mode([transformer, pooling, dense])
    with pytest.raises(ValueError, match="unknown encoder runtime 'tensorrt'"):
        load_encoder(runtime="tensorrt")
