"""Reranker benchmark: NDCG@10 of each model and each single signal on SciFact test and CISI, and
the latency the reranker adds per query.

    .venv/bin/python -m scripts.bench_rerank [--data ../shared/data/retrieval] [--models DIR] [--write-doc]

Trains LambdaMART and logistic regression on the SciFact *train* qrels (5-fold, out-of-fold
validation) into ``--models`` (unless ``--reuse`` and they exist), then scores the fused candidates
of the test queries. Test qrels are only read here, for the report. Latency: the reranker's
``score`` on 100 fused candidates per query (features + model), single-threaded, and the whole
``Searcher.run`` with and without reranking. ``--write-doc`` writes the tables into
docs/benchmarks.md between the ``rerank`` markers.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from artifacts import Manifest  # noqa: E402
from retrieval.corpus import load_qrels, load_queries  # noqa: E402
from retrieval.dense import EmbeddingCache  # noqa: E402
from retrieval.index import SearchIndex  # noqa: E402
from retrieval.onnx_encoder import load_encoder  # noqa: E402
from retrieval.pipeline import Searcher, SearchRequest  # noqa: E402
from retrieval.rerank import LearnedReranker  # noqa: E402
from retrieval.rerank_features import FEATURE_NAMES, RELATIVE_GROUPS, features_of_groups  # noqa: E402
from retrieval.rerank_training import TrainingConfig, collect_candidates, ndcg_at_10, train_reranker  # noqa: E402
from scripts.doc_sections import replace_section  # noqa: E402

logger = logging.getLogger("bench_rerank")

SIGNALS = {
    "BM25 (exact score)": ("bm25_share", 1),
    "dense cosine": ("dense_gap", 1),
    "better of the two ranks": ("best_log_rank", -1),
    "query-term coverage (idf)": ("coverage_share", 1),
    "title coverage (idf)": ("title_coverage_z", 1),
    "PRF centroid cosine": ("prf_gap", 1),
    "Rocchio expanded-query cosine": ("rocchio_gap", 1),
}


def signal_scores(sets: list, name: str, sign: int) -> list[np.ndarray]:
    """Rank by one feature; ties keep the fused order."""
    j = FEATURE_NAMES.index(name)
    return [sign * s.features[:, j].astype(np.float64) - 1e-9 * s.fused_ranks for s in sets]


def latency(searcher: Searcher, reranker: LearnedReranker, texts: list[str]) -> dict[str, float]:
    vectors = searcher.encode_queries(texts)
    score_ms, plain_ms, rerank_ms = [], [], []
    for text, vector in zip(texts, vectors, strict=True):
        hits = searcher.run(SearchRequest(text, top_k=100), vector).hits
        t0 = time.perf_counter()
        reranker.score(text, hits, searcher.index, vector)
        score_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        searcher.run(SearchRequest(text, top_k=10), vector)
        plain_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        searcher.run(SearchRequest(text, top_k=10, rerank=True, rerank_depth=100), vector)
        rerank_ms.append((time.perf_counter() - t0) * 1000)
    q = statistics.quantiles
    return {
        "score_p50": statistics.median(score_ms),
        "score_p95": q(score_ms, n=20)[18],
        "plain_p50": statistics.median(plain_ms),
        "rerank_p50": statistics.median(rerank_ms),
        "rerank_p95": q(rerank_ms, n=20)[18],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "retrieval")
    parser.add_argument("--models", type=Path, default=Path(tempfile.gettempdir()) / "sleuth-bench-rerank")
    parser.add_argument("--reuse", action="store_true", help="reuse trained models found in --models")
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--ablation", action="store_true", help="also train LambdaMART without each feature group")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("sentence_transformers", "bm25s", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    encoder = load_encoder()
    indexes = {
        name: SearchIndex.build(
            args.data / name, args.models / f"index-{name}", encoder, cache=EmbeddingCache(), overwrite=True
        )
        for name in ("scifact", "cisi")
    }
    models: dict[str, LearnedReranker] = {}
    train_seconds: dict[str, float] = {}
    for model_type in ("lambdamart", "logreg"):
        out = args.models / model_type
        if not (args.reuse and out.exists()):
            t0 = time.perf_counter()
            train_reranker(
                indexes["scifact"],
                encoder,
                args.data / "scifact" / "queries.jsonl",
                args.data / "scifact" / "qrels" / "train.tsv",
                out,
                model_type=model_type,
                overwrite=True,
            )
            train_seconds[model_type] = time.perf_counter() - t0
        models[model_type] = LearnedReranker.load(out)

    ablations: dict[str, LearnedReranker] = {}
    if args.ablation:
        for group in RELATIVE_GROUPS:
            out = args.models / f"ablation-{group}"
            if not (args.reuse and out.exists()):
                features = features_of_groups([g for g in RELATIVE_GROUPS if g != group])
                train_reranker(
                    indexes["scifact"],
                    encoder,
                    args.data / "scifact" / "queries.jsonl",
                    args.data / "scifact" / "qrels" / "train.tsv",
                    out,
                    config=TrainingConfig(features=features),
                    overwrite=True,
                )
            ablations[group] = LearnedReranker.load(out)

    rows: dict[str, dict[str, float]] = {}
    for name, index in indexes.items():
        qrels = load_qrels(args.data / name / "qrels" / "test.tsv")
        sets = collect_candidates(index, encoder, load_queries(args.data / name / "queries.jsonl"), qrels)
        rows.setdefault("hybrid RRF (the reranker's input)", {})[name] = ndcg_at_10(
            sets, [-s.fused_ranks for s in sets], qrels
        )
        for label, (feature, sign) in SIGNALS.items():
            rows.setdefault(f"signal: {label}", {})[name] = ndcg_at_10(sets, signal_scores(sets, feature, sign), qrels)
        for model_type, reranker in models.items():
            label = (
                f"**{model_type}** (prior weight {reranker.prior_weight:g}, "
                f"fused order beyond {reranker.max_query_terms} query terms)"
            )
            variants = {
                label: reranker,
                f"{model_type} without the query-length guard": LearnedReranker(reranker.model, reranker.prior_weight),
                f"{model_type} without guard and fused prior": LearnedReranker(reranker.model, 0.0),
            }
            for variant, scorer in variants.items():
                scores = [scorer.score_features(s.features, s.fused_ranks, s.query_terms) for s in sets]
                rows.setdefault(variant, {})[name] = ndcg_at_10(sets, scores, qrels)
        for group, reranker in ablations.items():
            scores = [reranker.score_features(s.features, s.fused_ranks, s.query_terms) for s in sets]
            rows.setdefault(f"lambdamart without the {group} features", {})[name] = ndcg_at_10(sets, scores, qrels)

    texts = [q.text for q in load_queries(args.data / "scifact" / "queries.jsonl")][: args.latency_queries]
    timing = {m: latency(Searcher(indexes["scifact"], encoder, r), r, texts) for m, r in models.items()}

    lines = [
        "## Learned reranker",
        "",
        "Trained on SciFact **train** qrels only (809 queries, 5 folds by query-id hash; each fold's model"
        " stops early on its held-out fold, the fused-prior weight is chosen on the out-of-fold scores by"
        " the one-standard-error rule). CISI has no training split: the SciFact model is applied as is."
        " NDCG@10 on the top-100 fused candidates (hybrid RRF, k=60, depth 100), encoder all-MiniLM-L6-v2.",
        "",
        "| ranking | SciFact test | CISI |",
        "|---|---|---|",
    ]
    for label, values in rows.items():
        lines.append(f"| {label} | {values['scifact']:.4f} | {values['cisi']:.4f} |")
    lines += ["", "Out-of-fold validation on SciFact train (from each model's manifest):", ""]
    lines += ["| model | fused | reranked | by prior weight |", "|---|---|---|---|"]
    for model_type in [*models, *(f"ablation-{g}" for g in ablations)]:
        valid = Manifest.read(args.models / model_type).metrics["valid"]
        by_weight = ", ".join(f"{w}: {v:.4f}" for w, v in valid["rerank_ndcg@10_by_prior_weight"].items())
        lines.append(f"| {model_type} | {valid['fused_ndcg@10']:.4f} | {valid['rerank_ndcg@10']:.4f} | {by_weight} |")
    lines += [
        "",
        f"Latency on SciFact ({len(texts)} queries, 100 candidates each, one thread, shared 2-core machine, "
        "query already encoded):",
        "",
        "| model | rerank score p50 / p95 (ms) | search without / with rerank p50 (ms) | with rerank p95 (ms) |",
        "|---|---|---|---|",
    ]
    for model_type, t in timing.items():
        lines.append(
            f"| {model_type} | {t['score_p50']:.1f} / {t['score_p95']:.1f} | {t['plain_p50']:.1f} / "
            f"{t['rerank_p50']:.1f} | {t['rerank_p95']:.1f} |"
        )
    if train_seconds:
        lines += [
            "",
            "Training time (candidates + 5 folds): " + ", ".join(f"{m} {s:.0f} s" for m, s in train_seconds.items()),
        ]
    lines += [
        "",
        "Reproduce:",
        "",
        "```",
        "D=../shared/data/retrieval",
        "sleuth train reranker --index INDEX --queries $D/scifact/queries.jsonl --qrels $D/scifact/qrels/train.tsv \\",
        "    --out MODEL [--model logreg]",
        "sleuth eval search --index INDEX --queries $D/scifact/queries.jsonl --qrels $D/scifact/qrels/test.tsv \\",
        "    --mode rerank --reranker MODEL",
        "sleuth explain reranker MODEL",
        ".venv/bin/python -m scripts.bench_rerank --ablation --write-doc",
        "```",
    ]
    section = "\n".join(lines)
    print(section)
    if args.write_doc:
        replace_section(ROOT / "docs" / "benchmarks.md", "rerank", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
