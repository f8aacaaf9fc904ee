"""Search-core benchmark: index build time and in-process queries/s per mode on SciFact.

    .venv/bin/python -m scripts.bench_search [--data ../shared/data/retrieval/scifact] [--cold] [--write-doc]

Single-threaded, in-process (no gRPC): what one core does per query. ``--cold`` re-embeds the
corpus (ignoring the embedding cache) to time a first build; ``--write-doc`` writes the table into
docs/benchmarks.md between the ``search`` markers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from retrieval.corpus import load_queries  # noqa: E402
from retrieval.dense import EmbeddingCache  # noqa: E402
from retrieval.index import SearchIndex  # noqa: E402
from retrieval.onnx_encoder import load_encoder  # noqa: E402
from retrieval.pipeline import Searcher, SearchRequest  # noqa: E402
from scripts.bench_serving import machine  # noqa: E402
from scripts.doc_sections import replace_section  # noqa: E402


def rate(searcher: Searcher, texts: list[str], mode: str, seconds: float, batch: int) -> tuple[float, float]:
    """Queries/s and median latency (ms per call) over repeated passes for about ``seconds``."""
    done, latencies = 0, []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for start in range(0, len(texts), batch):
            chunk = [SearchRequest(t, top_k=10, mode=mode) for t in texts[start : start + batch]]
            t0 = time.perf_counter()
            if batch == 1:
                searcher.search(chunk[0])
            else:
                searcher.batch_search(chunk)
            latencies.append((time.perf_counter() - t0) * 1000)
            done += len(chunk)
            if time.perf_counter() - started >= seconds:
                break
    return done / (time.perf_counter() - started), statistics.median(latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "retrieval" / "scifact")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    parser.add_argument("--cold", action="store_true", help="embed the corpus without the cache")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    encoder = load_encoder()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        index = SearchIndex.build(
            args.data, Path(tmp) / "index", encoder, cache=None if args.cold else EmbeddingCache()
        )
        build_total = time.perf_counter() - t0
        stats = index.manifest.stats["build_seconds"]
        searcher = Searcher(index, encoder)
        texts = [q.text for q in load_queries(args.data / "queries.jsonl")]
        searcher.search(SearchRequest(texts[0]))  # warm up
        rows = []
        for mode, batch in (("bm25", 1), ("dense", 1), ("hybrid", 1), ("dense", 64), ("hybrid", 64)):
            qps, p50 = rate(searcher, texts, mode, args.seconds, batch)
            rows.append((mode, batch, qps, p50))
            print(f"{mode:<7} batch={batch:<3} {qps:9.1f} q/s   median {p50:7.2f} ms per call", flush=True)

    load = os.getloadavg()[0]
    lines = [
        f"Machine: {machine()}. Load average at the start of the run: {load:.2f}.",
        f"Corpus: SciFact, {len(index)} documents; {len(texts)} queries cycled; top 10; torch threads = 1.",
        "",
        "| what | value |",
        "|---|---|",
        f"| index build, total ({'cold: embeddings computed' if args.cold else 'embeddings from cache'}) | "
        f"{build_total:.1f} s |",
        f"| BM25 indexing (tokenize + bm25s) | {stats['bm25']:.1f} s |",
        f"| embedding {'(cold)' if args.cold else '(cache read)'} | {stats['embed']:.1f} s |",
        "",
        "| mode | queries per call | queries/s (1 thread) | median ms per call |",
        "|---|---|---|---|",
        *[f"| {m} | {b} | {q:,.0f} | {p:.2f} |" for m, b, q, p in rows],
    ]
    table = "\n".join(lines)
    print(table)
    if args.write_doc:
        replace_section(ROOT / "docs" / "benchmarks.md", "search", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
