"""Reranker models, their files, training with a validation split, and the pipeline contract."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from artifacts import ArtifactNotFoundError, CorruptArtifactError, IncompatibleArtifactError, Manifest
from retrieval.corpus import Qrels
from retrieval.pipeline import Searcher, SearchRequest
from retrieval.rerank import (
    LambdaMartModel,
    LambdaMartParams,
    LearnedReranker,
    LogisticModel,
    LogRegParams,
    mix_with_prior,
    query_terms,
)
from retrieval.rerank_features import FEATURE_NAMES
from retrieval.rerank_training import CandidateSet, TrainingConfig, choose_prior_weight, fold_of, train_reranker
from retrieval.types import Query
from service.cli import main as cli_main
from tests.conftest import FakeEncoder

# Two informative features (monotone +1 and -1 in MONOTONE) and one noise feature.
NAMES = ("bm25_share", "dense_log_rank", "rank_disagreement")


def synthetic(queries: int, per_query: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relevance = the candidate with the highest ``x0 - x1`` (plus a little noise) in each query."""
    rng = np.random.default_rng(seed)
    x = rng.random((queries * per_query, 3)).astype(np.float32)
    signal = x[:, 0] - x[:, 1] + 0.05 * rng.standard_normal(len(x))
    y = np.zeros(len(x), dtype=np.int32)
    for q in range(queries):
        rows = slice(q * per_query, (q + 1) * per_query)
        y[rows][np.argmax(signal[rows])] = 1
    return x, y, np.full(queries, per_query)


def top1_accuracy(scores: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    offsets = np.r_[0, np.cumsum(groups)]
    return float(np.mean([y[a:b][np.argmax(scores[a:b])] for a, b in itertools.pairwise(offsets)]))


def test_lambdamart_learns_the_signal_and_round_trips(tmp_path: Path) -> None:
    train, valid = synthetic(150, seed=1), synthetic(40, seed=2)
    model = LambdaMartModel.fit(train, valid, NAMES, LambdaMartParams(num_rounds=200, min_data_in_leaf=20))
    x, y, groups = synthetic(60, seed=3)
    assert top1_accuracy(model.predict(x), y, groups) > 0.5  # a random pick scores 0.05
    importances = model.importances()
    assert importances["rank_disagreement"] < min(importances["bm25_share"], importances["dense_log_rank"])
    model.save(tmp_path)
    again = LambdaMartModel.load(tmp_path, NAMES)
    np.testing.assert_array_equal(again.predict(x), model.predict(x))


def test_lambdamart_monotone_constraints_hold() -> None:
    model = LambdaMartModel.fit(synthetic(150, seed=4), None, NAMES, LambdaMartParams(num_rounds=60))
    grid = np.linspace(0, 1, 50, dtype=np.float32)
    rng = np.random.default_rng(5)
    for _ in range(10):
        base = rng.random(3).astype(np.float32)
        up = np.tile(base, (50, 1))
        up[:, 0] = grid  # bm25_share: +1
        assert np.all(np.diff(model.predict(up)) >= -1e-12)
        down = np.tile(base, (50, 1))
        down[:, 1] = grid  # dense_log_rank: -1
        assert np.all(np.diff(model.predict(down)) <= 1e-12)


def test_logistic_regression_weights_and_round_trip(tmp_path: Path) -> None:
    x, y, _ = synthetic(150, seed=6)
    model = LogisticModel.fit(x, y, NAMES, LogRegParams())
    weights = model.importances()
    assert weights["bm25_share"] > 0 > weights["dense_log_rank"]
    assert abs(weights["rank_disagreement"]) < min(abs(weights["bm25_share"]), abs(weights["dense_log_rank"]))
    model.save(tmp_path)
    again = LogisticModel.load(tmp_path, NAMES)
    np.testing.assert_allclose(again.predict(x), model.predict(x))
    xt, yt, gt = synthetic(60, seed=7)
    assert top1_accuracy(model.predict(xt), yt, gt) > 0.5


def test_mix_with_prior() -> None:
    ranks = np.arange(1.0, 6.0)
    model = np.array([0.0, 0.0, 0.0, 0.0, 5.0])
    assert np.argmax(mix_with_prior(model, ranks, 0.0)) == 4
    # A strong prior keeps the fused order; a constant model leaves it untouched.
    assert np.argmax(mix_with_prior(model, ranks, 10.0)) == 0
    flat = mix_with_prior(np.ones(5), ranks, 0.5)
    assert list(np.argsort(-flat)) == [0, 1, 2, 3, 4]


def test_folds_are_deterministic_and_balanced() -> None:
    qids = [str(i) for i in range(2000)]
    folds = [fold_of(q, 5) for q in qids]
    assert folds == [fold_of(q, 5) for q in qids]
    assert all(0.17 < folds.count(k) / len(qids) < 0.23 for k in range(5))
    assert folds != [fold_of(q, 5, salt="other") for q in qids]


# -- training end to end on a synthetic corpus -------------------------------------------------

KEYWORDS = ["cat", "kitten", "feline", "dog", "canine", "wolf", "bird", "fish", "pet"]


@pytest.fixture(scope="module")
def animal_data(tmp_path_factory) -> tuple[Path, list[Query], Qrels, FakeEncoder]:
    """60 documents, each about two keywords and a unique code word; 60 queries each asking for
    one document by a keyword and its code word (so BM25 and the dense keywords disagree)."""
    rng = np.random.default_rng(11)
    root = tmp_path_factory.mktemp("animals")
    docs, queries, qrels = [], [], {}
    for i in range(60):
        a, b = rng.choice(KEYWORDS, size=2, replace=False)
        code = f"code{i:03d}"
        docs.append({"_id": f"d{i}", "title": f"{a} notes", "text": f"about {a} and {b}; reference {code}."})
        queries.append(Query(f"q{i}", f"{b} {code}"))
        qrels[f"q{i}"] = {f"d{i}": 1}
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return root, queries, qrels, FakeEncoder(KEYWORDS)


@pytest.fixture(scope="module")
def animal_index(animal_data):
    from retrieval.index import SearchIndex

    root, _, _, encoder = animal_data
    return SearchIndex.build(root / "corpus.jsonl", root / "index", encoder)


@pytest.mark.parametrize("model_type", ["lambdamart", "logreg"])
def test_train_reranker_writes_a_loadable_model_with_manifest(
    animal_data, animal_index, tmp_path: Path, model_type: str
) -> None:
    _, queries, qrels, encoder = animal_data
    config = TrainingConfig(folds=3, depth=20, lambdamart=LambdaMartParams(min_data_in_leaf=5), support_quantile=0.95)
    out = tmp_path / "rr"
    result = train_reranker(animal_index, encoder, queries, qrels, out, model_type=model_type, config=config)

    manifest = Manifest.read(tmp_path / "rr", kind="reranker")
    manifest.verify(tmp_path / "rr")
    assert manifest.params["model_type"] == model_type
    assert manifest.params["features"] == list(config.features)
    assert manifest.parents["index"] == animal_index.manifest.content_id
    assert len(manifest.inputs["qrels"]["content_sha256"]) == 64
    assert "lightgbm" in manifest.libraries and "scikit-learn" in manifest.libraries
    valid = manifest.metrics["valid"]
    assert valid["queries"] == manifest.metrics["fit"]["queries"] == len(queries)
    assert valid["folds"] == 3
    assert set(valid["rerank_ndcg@10_by_prior_weight"]) == {f"{w:g}" for w in config.prior_weights}
    assert result.reranker.prior_weight in config.prior_weights
    assert result.reranker.max_query_terms == manifest.params["max_query_terms"] == 2  # "keyword codeNNN"

    reranker = LearnedReranker.load(tmp_path / "rr")
    assert reranker.version == manifest.version == result.reranker.version
    assert reranker.model.model_type == model_type
    assert reranker.model.members == (3 if model_type == "lambdamart" else 1)

    # Served through the pipeline: the reranker's scores order the hits and are reported beside
    # the stage scores.
    searcher = Searcher(animal_index, encoder, reranker)
    query = queries[0]
    plain = searcher.search(SearchRequest(query.text, top_k=20))
    reranked = searcher.search(SearchRequest(query.text, top_k=20, rerank=True, rerank_depth=20))
    assert reranked.reranker_version == manifest.version
    assert {h.doc_id for h in reranked.hits} == {h.doc_id for h in plain.hits}
    scores = [h.rerank for h in reranked.hits]
    assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)
    expected = reranker.score(query.text, plain.hits, animal_index, encoder.encode([query.text])[0])
    by_doc = dict(zip([h.doc_id for h in plain.hits], expected, strict=True))
    assert all(h.rerank == pytest.approx(by_doc[h.doc_id]) for h in reranked.hits)


def test_reranker_improves_on_fusion_where_fusion_is_weak(animal_data, animal_index, tmp_path: Path) -> None:
    """The code word makes BM25 decisive here; the dense keywords are a distraction that
    fusion averages in. A trained model should learn to trust BM25 on this corpus."""
    from retrieval.evaluation import evaluate_run

    _, queries, qrels, encoder = animal_data
    config = TrainingConfig(folds=3, depth=20, lambdamart=LambdaMartParams(min_data_in_leaf=5))
    reranker = train_reranker(animal_index, encoder, queries, qrels, tmp_path / "rr", config=config).reranker
    searcher = Searcher(animal_index, encoder, reranker)

    def run(rerank: bool) -> dict[str, dict[str, float]]:
        out = {}
        for q in queries:
            hits = searcher.search(SearchRequest(q.text, top_k=20, rerank=rerank, rerank_depth=20)).hits
            out[q.qid] = {h.doc_id: h.score for h in hits}
        return out

    fused = evaluate_run(run(False), qrels, ["ndcg@10"]).means["ndcg@10"]
    reranked = evaluate_run(run(True), qrels, ["ndcg@10"]).means["ndcg@10"]
    assert reranked > fused + 0.2 and reranked > 0.9, (fused, reranked)


def test_training_rejects_too_few_queries(animal_data, animal_index, tmp_path: Path) -> None:
    _, queries, qrels, encoder = animal_data
    with pytest.raises(ValueError, match="too few"):
        train_reranker(animal_index, encoder, queries[:1], qrels, tmp_path / "rr")
    with pytest.raises(ValueError, match="no query has judgments"):
        train_reranker(animal_index, encoder, queries, {"other": {"d1": 1}}, tmp_path / "rr")
    assert not (tmp_path / "rr").exists()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="model type"):
        TrainingConfig(model_type="svm")
    with pytest.raises(ValueError, match="unknown or no features"):
        TrainingConfig(features=("nope",))
    with pytest.raises(ValueError, match="folds"):
        TrainingConfig(folds=1)


# -- model directories: errors and explain ------------------------------------------------------


@pytest.fixture(scope="module")
def trained_dir(animal_data, animal_index, tmp_path_factory) -> Path:
    _, queries, qrels, encoder = animal_data
    out = tmp_path_factory.mktemp("model") / "rr"
    config = TrainingConfig(folds=3, depth=20, lambdamart=LambdaMartParams(min_data_in_leaf=5))
    train_reranker(animal_index, encoder, queries, qrels, out, config=config)
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_load_errors(trained_dir: Path, tmp_path: Path, animal_index) -> None:
    with pytest.raises(ArtifactNotFoundError):
        LearnedReranker.load(tmp_path / "missing")
    with pytest.raises(IncompatibleArtifactError):
        LearnedReranker.load(animal_index.path)  # a search index, not a reranker

    tampered = _copy(trained_dir, tmp_path / "tampered")
    (tampered / "lambdamart.txt").write_text("tree\n", encoding="utf-8")
    with pytest.raises(CorruptArtifactError, match="checksum"):
        LearnedReranker.load(tampered)
    with pytest.raises(CorruptArtifactError):
        LearnedReranker.load(tampered, verify=False)

    bad_config = _copy(trained_dir, tmp_path / "bad-config")
    (bad_config / "reranker.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorruptArtifactError, match=r"reranker\.json"):
        LearnedReranker.load(bad_config, verify=False)

    no_model = _copy(trained_dir, tmp_path / "no-model")
    (no_model / "lambdamart.txt").unlink()
    with pytest.raises(CorruptArtifactError, match="missing"):
        LearnedReranker.load(no_model)
    with pytest.raises(ArtifactNotFoundError):
        LearnedReranker.load(no_model, verify=False)


def test_unknown_features_are_rejected() -> None:
    x, y, _ = synthetic(20)
    model = LogisticModel.fit(x, y, ("bm25_share", "dense_log_rank", "not_a_feature"), LogRegParams())
    with pytest.raises(ValueError, match="unknown features"):
        LearnedReranker(model)
    assert set(NAMES) <= set(FEATURE_NAMES)


def test_cli_explain(trained_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["explain", "reranker", str(trained_dir), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["model_type"] == "lambdamart"
    assert set(payload["features"]) == set(TrainingConfig().features)
    assert sum(payload["features"].values()) == pytest.approx(1.0)
    assert cli_main(["explain", "reranker", str(trained_dir)]) == 0
    text = capsys.readouterr().out
    assert "gain share" in text and "prior" not in text.split("\n")[0]
    assert cli_main(["explain", "reranker", str(trained_dir.parent / "missing")]) == 2
    assert "no such artifact directory" in capsys.readouterr().err


def _sets(n: int, relevant_rank: int) -> tuple[list[CandidateSet], Qrels]:
    sets, qrels = [], {}
    for q in range(n):
        docs = tuple(f"q{q}d{i}" for i in range(10))
        sets.append(CandidateSet(f"q{q}", docs, np.zeros((10, len(FEATURE_NAMES))), np.zeros(10, dtype=np.int32)))
        qrels[f"q{q}"] = {docs[relevant_rank - 1]: 1}
    return sets, qrels


def test_prior_weight_one_standard_error_rule() -> None:
    config = TrainingConfig(prior_weights=(0.0, 0.5, 1.0, 4.0))
    sets, qrels = _sets(30, relevant_rank=6)
    # A model that always finds the relevant document: a strong prior is clearly worse, so the
    # largest weight that still lets the model decide is kept.
    sharp = [np.where(np.arange(10) == 5, 3.0, 0.0) for _ in sets]
    weight, means = choose_prior_weight(sharp, sets, qrels, config)
    assert means["0"] == pytest.approx(1.0) and means["4"] < 0.9
    assert weight == max(w for w in config.prior_weights if means[f"{w:g}"] == pytest.approx(1.0)) < 4.0
    # A model that adds nothing to the fused order: every weight ties, so the most conservative
    # one is kept.
    same = [-np.arange(10.0) for _ in sets]
    weight, _ = choose_prior_weight(same, sets, qrels, config)
    assert weight == 4.0


def test_long_queries_beyond_the_training_support_keep_the_fused_order(animal_data, animal_index) -> None:
    _, _, _, encoder = animal_data
    x, y, _ = synthetic(20)
    names = ("bm25_share", "dense_log_rank", "rank_disagreement")
    model = LogisticModel.fit(x, y, names, LogRegParams())
    searcher = Searcher(animal_index, encoder)
    query = "cat dog bird fish wolf kitten code001"
    hits = searcher.run(SearchRequest(query, top_k=20), encoder.encode([query])[0]).hits
    vector = encoder.encode([query])[0]
    assert query_terms(animal_index, query) == 7
    free = LearnedReranker(model, 0.0, max_query_terms=7).score(query, hits, animal_index, vector)
    guarded = LearnedReranker(model, 0.0, max_query_terms=6).score(query, hits, animal_index, vector)
    assert list(np.argsort(-guarded, kind="stable")) == list(range(len(hits)))
    assert list(np.argsort(-free, kind="stable")) != list(range(len(hits)))
