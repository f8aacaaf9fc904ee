"""Corpus embedding throughput: single-process ONNX against Ray Data pools of 1 and 2 encoder actors.

    .venv/bin/python -m scripts.bench_ray_embed [--corpus DIR] [--actors 1 2] [--limit N]

Starts a private local Ray cluster (service.cluster.runtime.connect), embeds the corpus without
the embedding cache (every run computes), checks each Ray matrix against the single-process one,
and prints one JSON line per run: documents/s, the cluster start time and the resident memory of
the cluster's processes (the driver's descendants) at the end of each run. The default corpus is
SciFact's 5,183 documents (training-side data; only throughput is measured, nothing is scored).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from retrieval.corpus import load_corpus  # noqa: E402
from retrieval.onnx_encoder import OnnxEncoder  # noqa: E402
from service.cluster.embedding import EncoderSpec, RayEmbedConfig, embed_texts  # noqa: E402
from service.cluster.runtime import connect  # noqa: E402

logger = logging.getLogger("bench_ray_embed")
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "retrieval" / "scifact"


def cluster_rss_gb() -> float:
    """Resident memory of this process's descendants (the local cluster's processes), from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        parents[int(entry.name)] = int(fields["PPid"])
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - mine
        mine |= frontier
    return sum(rss[pid] for pid in mine) / 1024**3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit", type=int, default=0, help="embed only the first N documents")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    documents = load_corpus(args.corpus)
    if args.limit:
        documents = documents[: args.limit]
    texts = [d.contents for d in documents]
    with tempfile.TemporaryDirectory(prefix="sleuth-onnx-") as graphs:
        local = OnnxEncoder.load(cache_dir=graphs, threads=1)
        t0 = time.perf_counter()
        expected = local.encode(texts)
        seconds = time.perf_counter() - t0
        print(
            json.dumps({"run": "single-process onnx", "docs": len(texts), "docs_per_s": round(len(texts) / seconds, 1)})
        )
        del local

        t0 = time.perf_counter()
        with connect(None, num_cpus=2):
            start_s = time.perf_counter() - t0
            print(
                json.dumps({"run": "cluster start", "seconds": round(start_s, 1), "rss_gb": round(cluster_rss_gb(), 2)})
            )
            spec = EncoderSpec(runtime="onnx", threads=1, onnx_cache_dir=graphs)
            for actors in args.actors:
                config = RayEmbedConfig(actors=actors, cpus_per_actor=0.5)
                t0 = time.perf_counter()
                matrix = embed_texts(texts, spec, config)
                seconds = time.perf_counter() - t0
                diff = float(np.abs(matrix - expected).max())
                row = {
                    "run": f"ray data, {actors} actor(s)",
                    "docs": len(texts),
                    "docs_per_s": round(len(texts) / seconds, 1),
                    "seconds_incl_actor_start": round(seconds, 1),
                    "max_abs_diff_vs_single": diff,
                    "cluster_rss_gb": round(cluster_rss_gb(), 2),
                }
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
