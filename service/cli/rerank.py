"""``sleuth train reranker`` and ``sleuth explain reranker``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from artifacts import ArtifactError
from retrieval.errors import InvalidRequestError, SearchError
from service.cli import registry as registry_cli
from service.cli.options import check_artifact, check_new_directory

logger = logging.getLogger(__name__)

USER_ERRORS: tuple[type[BaseException], ...] = (SearchError, ArtifactError, OSError)


def register(groups: Any) -> None:
    train = groups.group("train", "train models")
    tr = train.add_parser("reranker", help="train a learned reranker from relevance judgments")
    tr.add_argument("--index", type=Path, help="index the candidates come from (default: the registry's active one)")
    tr.add_argument("--queries", required=True, type=Path, help="queries.jsonl (BEIR)")
    tr.add_argument("--qrels", required=True, type=Path, help="training qrels TSV (query-id, corpus-id, score)")
    tr.add_argument("--out", type=Path, help="model directory to create (default: a new registry version)")
    registry_cli.add_publish_options(tr)
    tr.add_argument(
        "--type",
        "--model",
        dest="model",
        default="lambdamart",
        choices=["lambdamart", "logreg", "cross"],
        help="the learner: LambdaMART or logistic regression on ranking features, or a neural cross-encoder "
        "(MiniLM, fine-tuned on the judged pairs; see docs/models/reranker.md)",
    )
    tr.add_argument("--folds", type=int, default=5, help="validation folds of the training queries (default 5)")
    tr.add_argument("--depth", type=int, default=100, help="fused candidates per training query (default 100)")
    tr.add_argument("--no-monotone", action="store_true", help="LambdaMART without monotone constraints")
    tr.add_argument("--threads", type=int, default=1, help="LightGBM threads (default 1)")
    tr.add_argument(
        "--query-length-guard",
        type=float,
        metavar="QUANTILE",
        help="keep the fused order for queries with more distinct terms than this quantile (0.5-1) of the "
        "training queries (default: off; training data do not support it, see docs/models/reranker.md)",
    )
    cross = tr.add_argument_group("cross-encoder (--type cross)")
    cross.add_argument("--epochs", type=int, default=1, help="passes over the training pairs (default 1)")
    cross.add_argument(
        "--negatives", type=int, default=3, help="hard negatives per relevant document, from the fused candidates"
    )
    cross.add_argument("--max-seq-length", type=int, default=256, help="word pieces per (query, document) pair")
    cross.add_argument("--learning-rate", type=float, default=1e-4, help="peak AdamW learning rate (default 1e-4)")
    cross.add_argument(
        "--depths",
        default="20",
        help="comma-separated candidate depths validated on the held-out queries; the smallest within one "
        "standard error of the best is kept (default 20: each candidate costs a forward pass)",
    )
    cross.add_argument("--seed", type=int, default=13, help="seed of the new head, dropout, negatives and order")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    tr.add_argument("--json", action="store_true", help="print the validation metrics as JSON")
    tr.set_defaults(func=run_train_reranker)

    explain = groups.group("explain", "describe trained models")
    ex = explain.add_parser("reranker", help="what a reranker relies on: feature importances or weights")
    ex.add_argument("model_dir", type=Path, help="reranker model directory")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.set_defaults(func=run_explain_reranker)


def run_train_reranker(args: argparse.Namespace) -> int:
    """``sleuth train reranker``: options, queries and qrels are checked before the index and encoder load."""
    import dataclasses

    from retrieval import load_encoder
    from retrieval.corpus import load_qrels, load_queries
    from retrieval.index import SearchIndex
    from retrieval.rerank import LambdaMartParams
    from retrieval.rerank_training import TrainingConfig, train_reranker

    check_new_directory(args.out, args.overwrite)
    if args.model == "cross":
        return _run_train_cross(args)
    try:
        config = TrainingConfig(
            model_type=args.model,
            folds=args.folds,
            depth=args.depth,
            lambdamart=dataclasses.replace(LambdaMartParams(), monotone=not args.no_monotone),
            threads=args.threads,
            support_quantile=args.query_length_guard,
        )
    except ValueError as exc:
        raise SearchError(str(exc)) from exc
    # Read once here so a bad line (file:line) stops the command before anything loads; training
    # reads the files again to record their checksums in the model's manifest.
    judged = load_qrels(args.qrels)
    queries = [q for q in load_queries(args.queries) if q.qid in judged]
    if not queries:
        raise SearchError(f"no query of {args.queries} is judged in {args.qrels}")
    index_dir = args.index or registry_cli.active_path(args, "search-index")
    check_artifact(index_dir, "search-index", "--index")
    logger.info("%d judged training queries; loading index %s", len(queries), index_dir)
    index = SearchIndex.load(index_dir)
    logger.info("loading encoder %s", index.encoder_info["name"])
    encoder = load_encoder(index.encoder_info["name"], "torch")
    logger.info(
        "training a %s reranker: candidates for each query (depth %d), %d validation folds, then the final fit",
        args.model,
        args.depth,
        args.folds,
    )
    result, out = registry_cli.publish_build(
        args,
        "reranker",
        lambda out: train_reranker(
            index, encoder, args.queries, args.qrels, out, config=config, overwrite=args.overwrite
        ),
        args.out,
    )
    if args.json:
        json.dump({"version": result.manifest.version, **result.metrics}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        valid = result.metrics["valid"]
        sys.stdout.write(
            f"{result.manifest.version} -> {out}\n"
            f"validation ({valid['queries']} queries): fused NDCG@10 {valid['fused_ndcg@10']:.4f}, "
            f"reranked {valid['rerank_ndcg@10']:.4f} (prior weight {result.reranker.prior_weight:g})\n"
        )
    return 0


def _cross_config(args: argparse.Namespace) -> Any:
    from retrieval.cross_training import CrossTrainingConfig

    try:
        depths = tuple(int(d) for d in str(args.depths).split(",") if d.strip())
    except ValueError as exc:
        raise InvalidRequestError("--depths", f"expected comma-separated integers, got {args.depths!r}") from exc
    try:
        return CrossTrainingConfig(
            epochs=args.epochs,
            negatives=args.negatives,
            max_seq_length=args.max_seq_length,
            learning_rate=args.learning_rate,
            depths=depths,
            seed=args.seed,
        )
    except ValueError as exc:
        raise SearchError(str(exc)) from exc


def _run_train_cross(args: argparse.Namespace) -> int:
    """``train reranker --type cross``: the options, queries and qrels are checked before anything loads."""
    from retrieval import load_encoder
    from retrieval.corpus import load_qrels, load_queries
    from retrieval.cross_training import train_cross_encoder
    from retrieval.index import SearchIndex

    config = _cross_config(args)
    judged = load_qrels(args.qrels)
    queries = [q for q in load_queries(args.queries) if q.qid in judged]
    if not queries:
        raise SearchError(f"no query of {args.queries} is judged in {args.qrels}")
    index_dir = args.index or registry_cli.active_path(args, "search-index")
    check_artifact(index_dir, "search-index", "--index")
    logger.info("%d judged training queries; loading index %s", len(queries), index_dir)
    index = SearchIndex.load(index_dir)
    encoder = load_encoder(index.encoder_info["name"], "torch")
    logger.info(
        "training a cross-encoder reranker: %d epoch(s), 1 + %d pairs per relevant document, max %d word pieces",
        config.epochs,
        config.negatives,
        config.max_seq_length,
    )
    result, out = registry_cli.publish_build(
        args,
        "reranker",
        lambda out: train_cross_encoder(
            index, encoder, args.queries, args.qrels, out, config=config, overwrite=args.overwrite
        ),
        args.out,
    )
    valid = result.metrics["valid"]
    if args.json:
        json.dump({"version": result.manifest.version, **result.metrics}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif "rerank_ndcg@10" in valid:
        sys.stdout.write(
            f"{result.manifest.version} -> {out}\n"
            f"held out ({valid['held_out_queries']} queries): fused NDCG@10 {valid['fused_ndcg@10']:.4f}, "
            f"reranked {valid['rerank_ndcg@10']:.4f} (depth {valid['depth']}, prior weight {valid['prior_weight']:g}, "
            f"epoch {valid['best_epoch']})\n"
        )
    else:
        sys.stdout.write(f"{result.manifest.version} -> {out}\n")
    return 0


def run_explain_reranker(args: argparse.Namespace) -> int:
    from artifacts import Manifest
    from retrieval.rerank import KIND, LearnedReranker
    from retrieval.rerank_training import describe

    check_artifact(args.model_dir, KIND, "model_dir")
    manifest = Manifest.read(args.model_dir, kind=KIND)
    if manifest.params.get("model_type") == "cross":
        return _explain_cross(args, manifest)
    reranker = LearnedReranker.load(args.model_dir)
    model = reranker.model
    ranked = describe(model.importances())
    what = "gain share" if model.model_type == "lambdamart" else "weight (log-odds per std. dev.)"
    if args.json:
        payload = {
            "version": reranker.version,
            "model_type": model.model_type,
            "prior_weight": reranker.prior_weight,
            "max_query_terms": reranker.max_query_terms,
            "importance": what,
            "features": dict(ranked),
            "metrics": manifest.metrics,
        }
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = [
        f"{reranker.version}  model {model.model_type}, trained on index {manifest.parents.get('index')}",
        f"score = z(model) + {reranker.prior_weight:g} * z(1 / (60 + fused rank)); "
        + (
            f"queries of more than {reranker.max_query_terms} distinct terms keep the fused order"
            if reranker.max_query_terms is not None
            else "no query-length guard"
        ),
        f"{'feature':<22} {what}",
    ]
    lines += [f"{name:<22} {value:+.4f}" for name, value in ranked]
    valid = manifest.metrics.get("valid", {})
    if valid:
        lines.append(
            f"validation ({valid.get('queries')} queries): fused NDCG@10 {valid.get('fused_ndcg@10')}, "
            f"reranked {valid.get('rerank_ndcg@10')}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _explain_cross(args: argparse.Namespace, manifest: Any) -> int:
    """A cross-encoder has no feature importances: its config, lineage and validation."""
    params = manifest.params
    valid = manifest.metrics.get("valid", {})
    if args.json:
        payload = {
            "version": manifest.version,
            "model_type": "cross",
            "prior_weight": params.get("prior_weight"),
            "depth": params.get("depth"),
            "parents": manifest.parents,
            "metrics": manifest.metrics,
        }
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = [
        f"{manifest.version}  cross-encoder from base weights {manifest.parents.get('base_weights')}, "
        f"trained on index {manifest.parents.get('index')}",
        f"score = z(logit) + {params.get('prior_weight'):g} * z(1 / (60 + fused rank)) over the top "
        f"{params.get('depth')} fused candidates",
    ]
    if "rerank_ndcg@10" in valid:
        lines.append(
            f"held out ({valid.get('held_out_queries')} queries): fused NDCG@10 {valid.get('fused_ndcg@10')}, "
            f"reranked {valid.get('rerank_ndcg@10')} (epoch {valid.get('best_epoch')})"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
