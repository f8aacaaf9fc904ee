"""Does the reranker's query-length guard pay? Decided on SciFact **train** queries only.

The guard makes the reranker keep the fused order for queries with more distinct analysed terms
than the 95th percentile of its training queries. The question it answers is whether a model fitted
on short queries hurts longer ones. This study asks it of the training data: the judged train
queries are split at a length quantile; LambdaMART is fitted on the short ones only (5 hash folds,
each fold's model stopping early on its held-out fold, the fold models bagged, as in
``sleuth train reranker``) and scored on the long ones it never saw, against their fused order.
The paired difference and its standard error decide: the guard stays only if the model is worse
than fused on unseen longer queries by more than one standard error.

Run: ``python -m scripts.guard_study --index INDEX [--json OUT]`` (SciFact train queries and qrels).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from retrieval import load_encoder
from retrieval.corpus import load_qrels, load_queries
from retrieval.index import SearchIndex
from retrieval.rerank import LambdaMartModel
from retrieval.rerank_features import FEATURE_NAMES
from retrieval.rerank_training import TrainingConfig, collect_candidates, fit_model, fold_of, per_query_ndcg_at_10

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "retrieval" / "scifact"


def study(index: SearchIndex, quantiles: tuple[float, ...] = (0.5, 0.75)) -> list[dict[str, float]]:
    config = TrainingConfig()
    qrels = load_qrels(DATA / "qrels" / "train.tsv")
    encoder = load_encoder(index.encoder_info["name"], "onnx")
    sets = collect_candidates(index, encoder, load_queries(DATA / "queries.jsonl"), qrels, depth=config.depth)
    lengths = np.array([s.query_terms or 0 for s in sets])
    columns = np.array([FEATURE_NAMES.index(name) for name in config.features])
    rows = []
    for quantile in quantiles:
        cut = float(np.quantile(lengths, quantile))
        short = [s for s, n in zip(sets, lengths, strict=True) if n <= cut]
        long = [s for s, n in zip(sets, lengths, strict=True) if n > cut]
        folds = [fold_of(s.qid, config.folds, config.split_salt) for s in short]
        members = []
        for k in range(config.folds):
            fit = [s for s, f in zip(short, folds, strict=True) if f != k]
            valid = [s for s, f in zip(short, folds, strict=True) if f == k]
            members.append(fit_model(config, fit, valid))
        model = LambdaMartModel.bag([m for m in members if isinstance(m, LambdaMartModel)])
        reranked = per_query_ndcg_at_10(long, [model.predict(s.features[:, columns]) for s in long], qrels)
        fused = per_query_ndcg_at_10(long, [-s.fused_ranks for s in long], qrels)
        diff = reranked - fused
        rows.append(
            {
                "fit_on_terms_at_most": cut,
                "fit_queries": len(short),
                "long_queries": len(long),
                "long_terms_median": float(np.median(lengths[lengths > cut])),
                "long_terms_max": int(lengths.max()),
                "fused_ndcg@10": round(float(fused.mean()), 4),
                "reranked_ndcg@10": round(float(reranked.mean()), 4),
                "difference": round(float(diff.mean()), 4),
                "standard_error": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
            }
        )
        logging.info("%s", rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True, type=Path, help="a SciFact index")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = study(SearchIndex.load(args.index))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
