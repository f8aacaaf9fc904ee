"""``sleuth kb build``, ``sleuth link``, ``sleuth train linker``, ``sleuth eval link``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from artifacts import ArtifactError, sha256_file
from linking import (
    BenchmarkFormatError,
    Disambiguator,
    DisambiguatorConfig,
    EntityLinker,
    KnowledgeBase,
    LinkingError,
    LinkOptions,
    MentionDetector,
    cross_validate,
    file_inputs,
    leave_one_dataset_out,
    load_spacy,
    prepare_documents,
    read_benchmark,
    shorten_person_mentions,
    train_disambiguator,
)
from linking.drift import linking_reference
from linking.evaluation import evaluate_linker
from retrieval.errors import InvalidRequestError
from service.cli import registry as registry_cli
from service.cli.options import add_encoder_runtime

logger = logging.getLogger(__name__)

USER_ERRORS: tuple[type[BaseException], ...] = (LinkingError, ArtifactError, InvalidRequestError, BenchmarkFormatError)


def register(groups: Any) -> None:
    """Add the linking commands to the ``sleuth`` parser."""
    kb = groups.group("kb", "knowledge bases for entity linking")
    build = kb.add_parser("build", help="build a KB directory from entity and alias files")
    build.add_argument("--entities", type=Path, action="append", required=True, help="entities JSON lines (repeatable)")
    build.add_argument("--aliases", type=Path, action="append", default=[], help="alias TSV (repeatable)")
    build.add_argument("--out", type=Path, help="KB directory to write (default: a new registry version)")
    registry_cli.add_publish_options(build)
    build.add_argument("--overwrite", action="store_true", help="replace an existing KB directory")
    build.set_defaults(func=run_kb_build)

    link = groups.root.add_parser("link", help="link the entity mentions of a text")
    link.add_argument("text", help="the text to link")
    link.add_argument("--kb", type=Path, help="KB directory (default: the demo KB)")
    link.add_argument("--model", type=Path, help="linker model directory (default: demo model / prior baseline)")
    link.add_argument("--top", type=int, default=3, help="runner-up candidates to show (default 3)")
    link.add_argument("--json", action="store_true", help="print JSON")
    add_encoder_runtime(link, "torch", "how contexts are encoded")
    link.set_defaults(func=run_link)

    train = groups.group("train", "train models")
    linker = train.add_parser("linker", help="train the entity-linking disambiguator")
    linker.add_argument("--kb", type=Path, required=True, help="KB directory")
    linker.add_argument(
        "--benchmark", type=Path, action="append", required=True, help="training documents (repeatable)"
    )
    linker.add_argument("--out", type=Path, help="model directory to write (default: a new registry version)")
    registry_cli.add_publish_options(linker)
    linker.add_argument("--model-type", choices=("lightgbm", "logistic"), default="lightgbm")
    linker.add_argument("--folds", type=int, default=5, help="cross-validation folds, grouped by document (default 5)")
    linker.add_argument("--no-augment", action="store_true", help="do not add short-name copies of the documents")
    linker.add_argument(
        "--detected-nil-rule",
        action="store_true",
        help="give detected mentions their own NIL rule, chosen by end-to-end F1 on the training documents "
        "(off by default: with partial annotations it learns to abstain; see docs/benchmarks.md)",
    )
    linker.add_argument(
        "--transfer",
        action="store_true",
        help="also score each benchmark with a model trained on the others only (leave-one-dataset-out; "
        "needs two or more --benchmark files)",
    )
    linker.add_argument("--overwrite", action="store_true", help="replace an existing model directory")
    linker.set_defaults(func=run_train_linker)

    evaluate = groups.group("eval", "offline evaluation")
    ev = evaluate.add_parser("link", help="score entity linking on a benchmark (micro P/R/F1)")
    ev.add_argument("--kb", type=Path, required=True, help="KB directory")
    ev.add_argument("--model", type=Path, help="linker model directory (default: the prior baseline)")
    ev.add_argument("--benchmark", type=Path, required=True, help="benchmark documents (JSON lines)")
    ev.add_argument("--mode", choices=("ed", "e2e"), default="ed", help="ed: gold mentions given; e2e: detected")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.add_argument("--errors", type=Path, help="write each wrong mention (JSON lines) here")
    ev.add_argument(
        "--per-doc-out", type=Path, help="write per-document tp/fp/fn (JSON lines) for `sleuth eval compare`"
    )
    add_encoder_runtime(ev, "torch", "how contexts are encoded")
    ev.set_defaults(func=run_eval_link)


def _encoder(runtime: str = "torch") -> Any:
    import torch

    from retrieval.onnx_encoder import load_encoder

    # Linking encodes small batches (a document's sentences); on a shared 2-core machine one torch
    # thread was several times faster than two (thread contention), so the linking commands use one.
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)  # one document's few dozen vectors: an OpenMP team costs more than it saves
    return load_encoder(runtime=runtime, threads=1)


def _linker(kb_dir: Path, model_dir: Path | None, runtime: str = "torch") -> EntityLinker:
    kb = KnowledgeBase.load(kb_dir)
    linker = EntityLinker(kb, _encoder(runtime), detector=MentionDetector(load_spacy()))
    if model_dir is not None:
        model, manifest = Disambiguator.load(model_dir)
        if kb.manifest is not None and manifest.parents.get("kb") not in (None, kb.manifest.content_id):
            logger.warning(
                "model %s was trained with KB %s, not %s (fine if the KB only grew)",
                manifest.version,
                manifest.parents.get("kb"),
                kb.manifest.content_id,
            )
        linker.scorer = model
    return linker


def run_kb_build(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    kb = KnowledgeBase.from_files(args.entities, args.aliases)
    inputs = file_inputs(args.entities, args.aliases)
    manifest, out = registry_cli.publish_build(
        args, "kb", lambda out: kb.save(out, inputs=inputs, overwrite=args.overwrite), args.out
    )
    print(
        f"{manifest.version}: {len(kb)} entities, {kb.alias_count()} aliases -> {out} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


def run_link(args: argparse.Namespace) -> int:
    if args.kb is None:
        from service.serving.linker import load_linker

        linker = load_linker(_encoder(args.encoder_runtime), None, args.model).linker
    else:
        linker = _linker(args.kb, args.model, args.encoder_runtime)
    links = linker.link(args.text, options=LinkOptions(top_candidates=max(args.top, 1)))
    rows = [
        {
            "start": link.mention.start,
            "end": link.mention.end,
            "surface": link.mention.surface,
            "label": link.mention.label,
            "entity": link.entity_id,
            "score": round(link.score, 4),
            "coreferent": link.coreferent,
            "candidates": [{"entity": c.entity_id, "score": round(c.score, 4)} for c in link.candidates],
        }
        for link in links
    ]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for row in rows:
        entity = row["entity"] if row["entity"] is not None else "NIL"
        others = ", ".join(f"{c['entity']} {c['score']:.3f}" for c in row["candidates"][1 : args.top + 1])
        print(
            f"{row['start']}-{row['end']}\t{row['surface']}\t-> {entity}\t{row['score']:.3f}"
            + (" (coref)" if row["coreferent"] else "")
            + (f"\t[{others}]" if others else "")
        )
    return 0


def run_train_linker(args: argparse.Namespace) -> int:
    if args.folds < 2:
        raise InvalidRequestError("--folds", "must be at least 2")
    if args.transfer and len({path.stem for path in args.benchmark}) < 2:
        raise InvalidRequestError("--transfer", "needs two or more --benchmark files with different names")
    linker = _linker(args.kb, None)
    documents, detected = [], []
    for path in args.benchmark:
        originals = read_benchmark(path)
        documents += prepare_documents(linker, originals, path.stem)
        if not args.no_augment:
            documents += prepare_documents(linker, shorten_person_mentions(originals, linker.kb), path.stem)
        # the detector's mentions of the same documents choose the NIL rule for detected mentions
        detected += prepare_documents(linker, originals, path.stem, detected=True)
    config = DisambiguatorConfig(model_type=args.model_type)
    cv = cross_validate(linker, documents, config, folds=args.folds, detected=detected)
    model = train_disambiguator(documents, config, first_pass_scores=cv.first_pass_scores, folds=args.folds)
    model = model.with_threshold(cv.threshold, cv.margin, detected=cv.detected_rule if args.detected_nil_rule else None)
    model.metrics = cv.to_dict()
    transfer = (
        leave_one_dataset_out(linker, documents, config, folds=args.folds, detected=detected) if args.transfer else None
    )
    if transfer is not None:
        model.metrics.update(transfer.to_dict())
    linker.scorer = model
    reference = linking_reference(linker, [doc for path in args.benchmark for doc in read_benchmark(path)])
    kb_id = linker.kb.manifest.content_id if linker.kb.manifest is not None else linker.kb.content_id
    manifest, out = registry_cli.publish_build(
        args,
        "linker",
        lambda out: model.save(
            out,
            parents={"kb": kb_id, "encoder": linker.encoder.checksum},
            params={
                "augment": not args.no_augment,
                "detected_nil_rule": args.detected_nil_rule,
                "folds": args.folds,
                "max_context_chars": linker.config.max_context_chars,
                "candidates": linker.config.candidates.__dict__,
                "encoder": linker.encoder.name,
            },
            inputs={"benchmarks": [{"path": str(p), "sha256": sha256_file(p)} for p in args.benchmark]},
            overwrite=args.overwrite,
            drift_reference=reference,
        ),
        args.out,
    )
    print(
        f"{manifest.version}: CV F1 {cv.f1_overall:.4f} {cv.f1_by_dataset}, "
        f"NIL below {cv.threshold:.2f} when leading by < {cv.margin:.2f} -> {out}"
    )
    if cv.detected_rule is not None:
        used = "used" if args.detected_nil_rule else "not used; --detected-nil-rule to use it"
        print(
            f"detected mentions: CV e2e F1 {cv.e2e_f1_gold_rule:.4f} with the gold-span NIL rule; "
            f"{cv.e2e_f1_overall:.4f} {cv.e2e_f1_by_dataset} with their own rule, "
            f"NIL below {cv.detected_rule[0]:.2f} when leading by < {cv.detected_rule[1]:.2f} ({used})"
        )
    if transfer is not None:
        print(f"leave-one-dataset-out F1 {transfer.f1_overall:.4f} {transfer.f1_by_dataset}")
        if transfer.e2e_f1_overall is not None:
            print(
                f"leave-one-dataset-out e2e F1 {transfer.e2e_f1_overall:.4f} {transfer.e2e_f1_by_dataset} "
                f"(with the gold-span NIL rule: {transfer.e2e_f1_gold_rule:.4f})"
            )
    return 0


def run_eval_link(args: argparse.Namespace) -> int:
    linker = _linker(args.kb, args.model, args.encoder_runtime)
    documents = read_benchmark(args.benchmark)
    started = time.perf_counter()
    result = evaluate_linker(linker, documents, args.mode)
    elapsed = time.perf_counter() - started
    report = result.to_dict()
    report["documents"] = len(documents)
    report["seconds"] = round(elapsed, 2)
    if args.errors is not None:
        with open(args.errors, "w", encoding="utf-8") as handle:
            for error in result.errors:
                handle.write(json.dumps(error.to_dict(), ensure_ascii=False) + "\n")
    if args.per_doc_out is not None:
        with open(args.per_doc_out, "w", encoding="utf-8") as handle:
            for doc_id, counts in result.per_document.items():
                handle.write(json.dumps({"id": doc_id, "tp": counts.tp, "fp": counts.fp, "fn": counts.fn}) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    recall = " ".join(f"R@{k} {v:.3f}" for k, v in sorted(result.candidate_recall().items()))
    print(
        f"{args.benchmark.stem} {args.mode}: P {report['precision']:.4f} R {report['recall']:.4f} "
        f"F1 {report['f1']:.4f} | candidates {recall} | {report['mentions']} mentions, {len(documents)} docs, "
        f"{elapsed:.1f} s",
        file=sys.stdout,
    )
    return 0
