"""``sleuth kb build``, ``sleuth link``, ``sleuth train linker``, ``sleuth eval link``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from artifacts import ArtifactError, Manifest, sha256_file
from linking import (
    BenchmarkFormatError,
    DisambiguatorConfig,
    EntityLinker,
    KnowledgeBase,
    LinkerConfig,
    LinkerTrainingConfig,
    LinkingError,
    LinkOptions,
    file_inputs,
    read_benchmark,
    train_linker,
)
from linking.entity_index import EXACT
from linking.evaluation import evaluate_linker
from linking.pipeline import MAX_TEXT_CHARS
from retrieval.errors import InvalidRequestError
from service.cli import registry as registry_cli
from service.cli.options import (
    InputError,
    add_client_security,
    add_encoder_runtime,
    check_artifact,
    check_file,
    check_new_directory,
    connect,
    nonblank,
    rpc_failure,
)
from service.serving.linker import LINKING_RUNTIME, linking_runtime, load_linker, model_runtime

logger = logging.getLogger(__name__)

USER_ERRORS: tuple[type[BaseException], ...] = (LinkingError, ArtifactError, InvalidRequestError, BenchmarkFormatError)

MAX_RUNNER_UPS = 99
"""``link --top`` at most: the protocol carries at most 100 candidates per mention (the link and 99 others)."""


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

    link = groups.root.add_parser("link", help="link the entity mentions of a text (locally or on a server)")
    link.add_argument("text", type=nonblank, help="the text to link")
    link.add_argument("--target", help="link on this running server (host:port) instead of locally")
    link.add_argument("--kb", type=Path, help="KB directory (local; default: the demo KB)")
    link.add_argument("--model", type=Path, help="linker model directory (local; default: demo model / prior baseline)")
    link.add_argument("--top", type=int, default=3, help=f"runner-up candidates to show, 0 to {MAX_RUNNER_UPS}")
    link.add_argument("--json", action="store_true", help="print JSON")
    add_client_security(link)
    add_encoder_runtime(
        link,
        None,
        "how contexts are encoded (local)",
        "the runtime the model was trained with (onnx-int8 without a model)",
    )
    link.set_defaults(func=run_link)

    train = groups.group("train", "train models")
    linker = train.add_parser("linker", help="train the entity-linking disambiguator")
    linker.add_argument("--kb", type=Path, required=True, help="KB directory")
    linker.add_argument(
        "--benchmark", type=Path, action="append", required=True, help="training documents (repeatable)"
    )
    linker.add_argument("--out", type=Path, help="model directory to write (default: a new registry version)")
    registry_cli.add_publish_options(linker)
    linker.add_argument(
        "--model-type", choices=("lightgbm", "logistic"), default="lightgbm", help="the disambiguator's learner"
    )
    linker.add_argument("--folds", type=int, default=5, help="cross-validation folds, grouped by document")
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
    add_encoder_runtime(linker, LINKING_RUNTIME, "how entities and contexts are encoded")
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
    add_encoder_runtime(
        ev, None, "how contexts are encoded", "the runtime the model was trained with (onnx-int8 without a model)"
    )
    ev.set_defaults(func=run_eval_link)


def _encoder(runtime: str) -> Any:
    """The default encoder on ``runtime``, on one thread.

    Linking encodes small batches (a document's sentences); on a shared 2-core machine one torch
    thread was several times faster than two (thread contention), and an OpenMP team for FAISS
    costs more than a document's few dozen vectors save.
    """
    from retrieval import DEFAULT_ENCODER, load_encoder
    from service.serving.runner import configure_threads

    configure_threads(1, 1)
    logger.info("loading encoder %s (runtime %s)", DEFAULT_ENCODER, runtime)
    return load_encoder(DEFAULT_ENCODER, runtime, threads=1)


def _open_linker(kb_dir: Path, model_dir: Path | None, runtime: str, *, training: bool = False) -> EntityLinker:
    """The linker of ``kb_dir`` + ``model_dir`` (the library's entry point), after their manifests are checked.

    ``training``: exact entity search whatever the KB's size (no HNSW graph is built; see
    :class:`~linking.entity_index.EntitySearch`)."""
    started = time.perf_counter()
    encoder = _encoder(runtime)
    logger.info("loading KB %s, its entity vectors, spaCy and the model %s", kb_dir, model_dir or "(prior baseline)")
    config = LinkerConfig(entity_search=EXACT) if training else None
    linker = EntityLinker.open(kb_dir, model_dir, encoder, config=config)
    logger.info("linker ready in %.1f s", time.perf_counter() - started)
    return linker


def run_kb_build(args: argparse.Namespace) -> int:
    """``sleuth kb build``: read and check the entity and alias files, then write the KB."""
    check_new_directory(args.out, args.overwrite)
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
    """``sleuth link``: the text and every option are checked before a model loads."""
    if len(args.text) > MAX_TEXT_CHARS:
        raise InvalidRequestError("text", f"is {len(args.text)} characters; the limit is {MAX_TEXT_CHARS}")
    if not 0 <= args.top <= MAX_RUNNER_UPS:
        raise InvalidRequestError("--top", f"must be within [0, {MAX_RUNNER_UPS}], got {args.top}")
    if args.target is not None:
        if args.kb is not None or args.model is not None:
            raise InvalidRequestError("--target", "links with the server's KB and model: drop --kb and --model")
        rows = _remote_link(args)
    else:
        check_artifact(args.kb, "kb", "--kb")
        check_artifact(args.model, "linker", "--model")
        runtime = linking_runtime(args.model, args.encoder_runtime)
        if args.kb is None:
            linker = load_linker(_encoder(runtime), None, args.model).linker
        else:
            linker = _open_linker(args.kb, args.model, runtime)
        links = linker.link(args.text, options=LinkOptions(top_candidates=args.top + 1))
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
    if not rows:
        # An empty answer is not an error, but a silent one looks like a crash.
        print("sleuth: no entity mention found in the text", file=sys.stderr)
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


def _remote_link(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``sleuth link --target``: the server's answer as the rows a local link prints."""
    import grpc

    with connect(args) as client:
        try:
            response = client.link(args.text, top_candidates=args.top + 1)
        except grpc.RpcError as exc:
            raise rpc_failure(args.target, exc) from None
    logger.info("linked by %s with %s, %s", args.target, response.kb_version, response.model_version)
    return [
        {
            "start": m.start,
            "end": m.end,
            "surface": m.surface,
            "label": m.label or None,
            "entity": None if m.nil else m.entity_id,
            "score": round(m.score, 4),
            "coreferent": m.coreferent,
            "candidates": [{"entity": c.entity_id, "score": round(c.score, 4)} for c in m.candidates],
        }
        for m in response.mentions
    ]


def _read_benchmarks(paths: list[Path]) -> list[tuple[str, list[Any]]]:
    """Each benchmark file's documents, named by its file stem; errors name file:line."""
    for path in paths:
        check_file(path, "--benchmark")
    return [(path.stem, read_benchmark(path)) for path in paths]


def run_train_linker(args: argparse.Namespace) -> int:
    """``sleuth train linker``: options, KB manifest and benchmark files are checked before anything loads."""
    if args.folds < 2:
        raise InvalidRequestError("--folds", "must be at least 2")
    if args.transfer and len({path.stem for path in args.benchmark}) < 2:
        raise InvalidRequestError("--transfer", "needs two or more --benchmark files with different names")
    check_new_directory(args.out, args.overwrite)
    check_artifact(args.kb, "kb", "--kb")
    benchmarks = _read_benchmarks(args.benchmark)
    logger.info(
        "read %d documents from %s",
        sum(len(docs) for _, docs in benchmarks),
        ", ".join(f"{name} ({len(docs)})" for name, docs in benchmarks),
    )
    linker = _open_linker(args.kb, None, args.encoder_runtime, training=True)
    config = LinkerTrainingConfig(
        model=DisambiguatorConfig(model_type=args.model_type),
        folds=args.folds,
        augment=not args.no_augment,
        detected_nil_rule=args.detected_nil_rule,
        transfer=args.transfer,
    )
    started = time.perf_counter()
    logger.info(
        "training: preparing documents%s, %d-fold cross-validation%s, fitting the %s model",
        " and their short-name copies" if config.augment else "",
        config.folds,
        ", leave-one-dataset-out transfer" if config.transfer else "",
        args.model_type,
    )
    try:
        trained = train_linker(linker, benchmarks, config)
    except ValueError as exc:  # documents that cannot be trained on (one group only, no correct candidate)
        raise InputError(f"cannot train on {', '.join(map(str, args.benchmark))}: {exc}") from exc
    logger.info("trained in %.1f s", time.perf_counter() - started)
    inputs = {
        "benchmarks": [{"path": str(p), "sha256": sha256_file(p)} for p in args.benchmark],
        "encoder_runtime": args.encoder_runtime,
    }
    manifest, out = registry_cli.publish_build(
        args, "linker", lambda out: trained.save(out, inputs=inputs, overwrite=args.overwrite), args.out
    )
    cv, transfer = trained.cv, trained.transfer
    assert cv is not None  # cross-validation is on for the command
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


def _trained_on(model_dir: Path | None, benchmark: Path) -> bool:
    """True when ``benchmark`` (by checksum) was one of the files ``train linker`` fitted ``model_dir`` on."""
    if model_dir is None:
        return False
    inputs = Manifest.read(model_dir).inputs.get("benchmarks", [])
    trained = {row.get("sha256") for row in inputs if isinstance(row, dict)}
    return sha256_file(benchmark) in trained


def run_eval_link(args: argparse.Namespace) -> int:
    """``sleuth eval link``: the benchmark is read and the KB and model manifests checked before loading."""
    check_file(args.benchmark, "--benchmark")
    documents = read_benchmark(args.benchmark)
    check_artifact(args.kb, "kb", "--kb")
    check_artifact(args.model, "linker", "--model")
    trained_on = _trained_on(args.model, args.benchmark)
    if trained_on:
        print(
            f"sleuth: warning: {args.benchmark} was a training input of the model {args.model}: "
            "these scores are not held-out",
            file=sys.stderr,
        )
    trained_runtime = model_runtime(args.model)
    runtime = linking_runtime(args.model, args.encoder_runtime)
    if trained_runtime is not None and trained_runtime != runtime:
        print(
            f"sleuth: warning: the model was trained on {trained_runtime} vectors, scored here on "
            f"{runtime} (--encoder-runtime {trained_runtime} to match)",
            file=sys.stderr,
        )
    linker = _open_linker(args.kb, args.model, runtime)
    started = time.perf_counter()
    result = evaluate_linker(linker, documents, args.mode)
    elapsed = time.perf_counter() - started
    report = result.to_dict()
    report["documents"] = len(documents)
    report["seconds"] = round(elapsed, 2)
    report["trained_on_benchmark"] = trained_on
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
        f"F1 {report['f1']:.4f} | rank-1 F1 {result.rank1.f1:.4f} | candidates {recall} | "
        f"{report['mentions']} mentions, {len(documents)} docs, {elapsed:.1f} s"
        + (" | TRAINED ON THIS FILE" if trained_on else ""),
        file=sys.stdout,
    )
    return 0
