"""Cost of the cross-encoder reranker per query at several depths, on torch and ONNX Runtime.

    .venv/bin/python -m scripts.bench_cross --index IDX --reranker RR --queries Q [--qrels TRAIN_QRELS]
        [--count 20] [--depths 20,50,100] [--json]

For the first ``--count`` queries (of those judged in ``--qrels``, when given: use training
queries), the fused candidates are fetched once; then the reranker scores the top ``depth`` of
them, on one thread, and the CPU time of the process (``time.process_time``) and the wall time are
recorded per query. The ONNX runtime's logits are compared with torch's on the same pairs (largest
absolute difference). Nothing here reads relevance: the numbers are costs only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from retrieval.corpus import load_qrels, load_queries
from retrieval.cross_encoder import CrossEncoderReranker
from retrieval.index import SearchIndex
from retrieval.onnx_encoder import load_encoder
from retrieval.pipeline import Searcher, SearchRequest

logger = logging.getLogger("bench_cross")


def measure(reranker: CrossEncoderReranker, index: SearchIndex, queries: list, candidates: list, depth: int) -> dict:
    """Median and mean CPU and wall milliseconds of scoring the top ``depth`` candidates of each query."""
    reranker.depth = depth
    cpu, wall = [], []
    for query, hits in zip(queries, candidates, strict=True):
        c0, w0 = time.process_time(), time.perf_counter()
        reranker.score(query.text, hits[:depth], index, None)
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    return {
        "depth": depth,
        "queries": len(queries),
        "cpu_ms_median": round(statistics.median(cpu), 1),
        "cpu_ms_mean": round(statistics.fmean(cpu), 1),
        "wall_ms_median": round(statistics.median(wall), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--reranker", required=True, type=Path)
    parser.add_argument("--queries", required=True, type=Path)
    parser.add_argument("--qrels", type=Path, help="only queries judged here (training qrels)")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--depths", default="20,50,100")
    parser.add_argument("--runtimes", default="torch,onnx")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    torch.set_num_threads(1)
    depths = [int(d) for d in args.depths.split(",")]
    index = SearchIndex.load(args.index)
    encoder = load_encoder(index.encoder_info["name"], "onnx")
    queries = load_queries(args.queries)
    if args.qrels is not None:
        judged = load_qrels(args.qrels)
        queries = [q for q in queries if q.qid in judged]
    queries = queries[: args.count]
    searcher = Searcher(index, encoder)
    vectors = searcher.encode_queries([q.text for q in queries])
    candidates = [
        list(searcher.run(SearchRequest(q.text, top_k=max(depths)), v).hits)
        for q, v in zip(queries, vectors, strict=True)
    ]
    rows = []
    logits: dict[str, list[np.ndarray]] = {}
    for runtime in args.runtimes.split(","):
        reranker = CrossEncoderReranker.load(args.reranker, runtime=runtime, threads=1)
        reranker.logits(queries[0].text, ["warm-up"])
        for depth in depths:
            row = {"runtime": runtime, **measure(reranker, index, queries, candidates, depth)}
            logger.info("%s", row)
            rows.append(row)
        texts = [[index.document(h.doc_id).contents for h in hits[: min(depths)]] for hits in candidates]
        logits[runtime] = [reranker.logits(q.text, t) for q, t in zip(queries, texts, strict=True)]
    payload: dict = {"rows": rows}
    if "torch" in logits and "onnx" in logits:
        diff = max(float(np.abs(a - b).max()) for a, b in zip(logits["torch"], logits["onnx"], strict=True))
        payload["onnx_max_abs_logit_difference"] = diff
    if args.json:
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        if "onnx_max_abs_logit_difference" in payload:
            sys.stdout.write(
                f"onnx vs torch: largest logit difference {payload['onnx_max_abs_logit_difference']:.2e}\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
