"""How the cost of one shard grows with its size: dense (flat, HNSW, IVF-PQ) and BM25, on synthetic data.

    .venv/bin/python -m scripts.bench_scale [--sizes 10000 100000 1000000] [--types flat hnsw ivfpq]
        [--queries 200] [--bm25] [--workdir DIR] [--out results.jsonl]

For each corpus size and FAISS type it builds the index with :class:`retrieval.dense.DenseIndex`
(the class a shard serves from, with the shipped default parameters), writes it to disk and
reports: build seconds, bytes on disk (FAISS holds the same structure in memory, so this is the
shard's resident index memory), single-query search latency at k=100 (p50/p99, one query per call,
FAISS on one thread: the cost one core pays per query) and recall@100 against the exact flat index.
With ``--bm25`` it does the same for :class:`retrieval.bm25.BM25Index` over synthetic texts.
With ``--encoder N`` it measures the encoder on one thread (ONNX float32 and int8): documents/s over
the first ``N`` SciFact documents (the build's embedding rate) and milliseconds per query, one query
per call, over SciFact training queries (what the query front pays per search).

Synthetic data, so that sizes past any corpus we hold can be measured:

* vectors: 384-d (all-MiniLM-L6-v2's size), unit length, in clusters of about 100 documents
  (``doc = normalize(center + noise)``: documents of one cluster have a cosine of about 0.5, of
  different clusters about 0, like topical neighbours in a real embedding space); a query is a
  random document plus noise of the same size, so it has near neighbours as real queries do.
  Uniform random vectors would be the worst case for HNSW and IVF-PQ; real embeddings are more
  clustered than this, so the recall here is a conservative estimate.
* texts: words drawn from a Zipf (s=1.1) vocabulary of 200,000 synthetic terms, 120 terms per
  document on average (SciFact's abstracts have ~120 analysed terms), queries of 8 terms taken from
  a random document (SciFact's queries have ~8 after analysis).

Every run is seeded (``--seed``); one JSON line per (kind, size, type) goes to stdout and ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval.bm25 import BM25Index
from retrieval.dense import DenseIndex, FaissConfig

DIMENSION = 384
CLUSTER_SIZE = 100
NOISE = 1.0  # norm of the noise added to a unit center: cos(doc, center) ~ 1/sqrt(2)
VOCABULARY = 200_000
DOC_TERMS = 120
QUERY_TERMS = 8
K = 100


@dataclass(frozen=True)
class Row:
    """One measurement: a shard of ``documents`` documents searched with ``kind``/``index_type``."""

    kind: str  # "dense" or "bm25"
    index_type: str  # flat, hnsw, ivfpq, or bm25
    documents: int
    build_s: float
    build_cpu_s: float  # process CPU seconds of the build (both cores for HNSW and IVF-PQ training)
    index_bytes: int
    bytes_per_doc: float
    p50_ms: float  # wall clock, one query per call
    p99_ms: float
    cpu_ms: float  # mean CPU time per query on the calling thread
    queries: int
    recall_at_100: float | None  # against flat (dense only; flat is 1 by definition)
    load: float  # the machine's 1-minute load average when the row finished (other jobs slow the run)
    params: str = ""  # the FAISS parameters that differ by type (hnsw M/ef, ivfpq nlist/nprobe/m/nbits)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def synthetic_vectors(n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
    """``n`` clustered unit vectors (float32, ``n x 384``), generated in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    centers = _unit(rng.standard_normal((max(1, n // CLUSTER_SIZE), DIMENSION)).astype(np.float32))
    out = np.empty((n, DIMENSION), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        members = rng.integers(0, len(centers), stop - start)
        noise = rng.standard_normal((stop - start, DIMENSION)).astype(np.float32) * (NOISE / math.sqrt(DIMENSION))
        out[start:stop] = _unit(centers[members] + noise)
    return out


def synthetic_queries(vectors: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` queries, each a random document moved by noise of the documents' own size."""
    rng = np.random.default_rng(seed + 1)
    picks = rng.integers(0, len(vectors), count)
    noise = rng.standard_normal((count, DIMENSION)).astype(np.float32) * (NOISE / math.sqrt(DIMENSION))
    return _unit(vectors[picks] + noise)


def _word(i: int) -> str:
    """A synthetic term: ``i`` in base 26 behind a fixed prefix (letters only, so the tokenizer keeps it)."""
    letters = []
    while True:
        i, r = divmod(i, 26)
        letters.append(chr(ord("a") + r))
        if i == 0:
            break
    return "zq" + "".join(letters)


def synthetic_texts(n: int, seed: int) -> Iterator[str]:
    """``n`` documents of Zipf-distributed synthetic terms, ``DOC_TERMS`` on average."""
    rng = np.random.default_rng(seed + 2)
    ranks = np.arange(1, VOCABULARY + 1, dtype=np.float64)
    weights = ranks**-1.1
    cumulative = np.cumsum(weights / weights.sum())
    words = [_word(i) for i in range(VOCABULARY)]
    lengths = rng.poisson(DOC_TERMS, n).clip(min=1)
    for length in lengths:
        ids = np.searchsorted(cumulative, rng.random(length))
        yield " ".join(words[min(i, VOCABULARY - 1)] for i in ids)


def _latencies(search: Callable[[Any], object], queries: list) -> tuple[float, float, float]:
    """Wall p50 and p99 and mean CPU ms of ``search(q)`` over ``queries``, after a few warm-up calls.

    CPU time is this thread's (``time.thread_time``: FAISS, bm25s and ONNX Runtime run on the calling
    thread here), so it is the cost of a query even when other jobs slow the wall clock down.
    """
    for q in queries[:5]:
        search(q)
    wall, cpu = [], []
    for q in queries:
        started, started_cpu = time.perf_counter(), time.thread_time()
        search(q)
        cpu.append((time.thread_time() - started_cpu) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(wall, 50)), float(np.percentile(wall, 99)), float(np.mean(cpu))


def _params(config: FaissConfig) -> str:
    if config.index_type == "hnsw":
        return f"M={config.hnsw_m} efConstruction={config.hnsw_ef_construction} efSearch={config.hnsw_ef_search}"
    if config.index_type == "ivfpq":
        return f"nlist={config.ivf_nlist} nprobe={config.ivf_nprobe} m={config.pq_m} nbits={config.pq_nbits}"
    return ""


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dense_rows(
    size: int, types: list[str], queries: int, seed: int, workdir: Path, ivfpq: dict[str, int] | None = None
) -> Iterator[Row]:
    """Build, save, reload and search each FAISS type over ``size`` synthetic vectors.

    ``ivfpq`` overrides the shipped ivfpq parameters (``ivf_nlist``, ``ivf_nprobe``, ``pq_m``, ``pq_nbits``).
    """
    vectors = synthetic_vectors(size, seed)
    query_vectors = synthetic_queries(vectors, queries, seed)
    ids = [str(i) for i in range(size)]
    exact: list[set[str]] | None = None
    for index_type in ["flat", *[t for t in types if t != "flat"]]:
        config = FaissConfig(index_type=index_type, **(ivfpq or {}) if index_type == "ivfpq" else {})
        faiss.omp_set_num_threads(2)  # builds are offline work: both cores
        started, started_cpu = time.perf_counter(), time.process_time()
        built = DenseIndex.build(vectors, ids, config)
        build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
        directory = workdir / f"dense-{index_type}-{size}"
        directory.mkdir(parents=True, exist_ok=True)
        built.save(directory)
        del built
        index = DenseIndex.load(directory, ids, config)
        faiss.omp_set_num_threads(1)  # a query is served on one core
        top = [{h.doc_id for h in hits} for hits in index.search(query_vectors, K)]
        if index_type == "flat":
            exact = top
        assert exact is not None
        recall = float(np.mean([len(a & e) / len(e) for a, e in zip(top, exact, strict=True)]))
        p50, p99, cpu = _latencies(lambda q, index=index: index.search(q[None, :], K), list(query_vectors))
        size_bytes = _dir_bytes(directory)
        shutil.rmtree(directory)
        if index_type in types:
            yield Row(
                "dense",
                index_type,
                size,
                build_s,
                build_cpu_s,
                size_bytes,
                size_bytes / size,
                p50,
                p99,
                cpu,
                queries,
                recall,
                _load(),
                _params(config),
            )
        del index


def bm25_row(size: int, queries: int, seed: int, workdir: Path) -> Row:
    """Build, save, reload (memory-mapped, as shards serve) and search a BM25 index of synthetic texts."""
    texts = list(synthetic_texts(size, seed))
    ids = [str(i) for i in range(size)]
    rng = np.random.default_rng(seed + 3)
    query_texts = [" ".join(rng.choice(texts[i].split(), QUERY_TERMS)) for i in rng.integers(0, size, queries)]
    started, started_cpu = time.perf_counter(), time.process_time()
    built = BM25Index.build(texts, ids)
    build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    del texts
    directory = workdir / f"bm25-{size}"
    directory.mkdir(parents=True, exist_ok=True)
    built.save(directory)
    del built
    index = BM25Index.load(directory, ids, mmap=True)
    p50, p99, cpu = _latencies(lambda q: index.search(q, K), query_texts)
    size_bytes = _dir_bytes(directory)
    shutil.rmtree(directory)
    return Row(
        "bm25", "bm25", size, build_s, build_cpu_s, size_bytes, size_bytes / size, p50, p99, cpu, queries, None, _load()
    )


SCIFACT = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "retrieval" / "scifact"


def encoder_rows(documents: int, queries: int, corpus_dir: Path = SCIFACT) -> Iterator[dict[str, object]]:
    """Single-thread ONNX encoder cost: documents/s and ms per query, float32 and int8."""
    from retrieval.corpus import load_corpus, load_queries
    from retrieval.onnx_encoder import OnnxEncoder

    texts = [doc.contents for doc in load_corpus(corpus_dir / "corpus.jsonl")[:documents]]
    train_ids = {line.split("\t")[0] for line in (corpus_dir / "qrels" / "train.tsv").read_text().splitlines()[1:]}
    query_texts = [q.text for q in load_queries(corpus_dir / "queries.jsonl") if q.qid in train_ids][:queries]
    for runtime, quantize in (("onnx", False), ("onnx-int8", True)):
        encoder = OnnxEncoder.load(quantize=quantize, threads=1)
        encoder.encode(texts[:8])
        started, started_cpu = time.perf_counter(), time.thread_time()
        encoder.encode(texts, batch_size=32)
        docs_per_s = len(texts) / (time.perf_counter() - started)
        docs_per_cpu_s = len(texts) / (time.thread_time() - started_cpu)
        p50, p99, cpu = _latencies(lambda q, encoder=encoder: encoder.encode([q]), query_texts)
        yield {
            "kind": "encoder",
            "runtime": runtime,
            "documents": len(texts),
            "docs_per_s": docs_per_s,
            "docs_per_cpu_s": docs_per_cpu_s,
            "queries": len(query_texts),
            "query_p50_ms": p50,
            "query_p99_ms": p99,
            "query_cpu_ms": cpu,
            "load": _load(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--types", nargs="+", default=["flat", "hnsw", "ivfpq"], choices=["flat", "hnsw", "ivfpq"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--bm25", action="store_true", help="also measure BM25 over synthetic texts")
    parser.add_argument("--no-dense", action="store_true", help="skip the FAISS measurements")
    parser.add_argument(
        "--encoder",
        type=int,
        default=0,
        metavar="N",
        help="also time the ONNX encoder on the first N SciFact documents and 200 training queries",
    )
    for flag, field in (("--ivf-nlist", "ivf_nlist"), ("--ivf-nprobe", "ivf_nprobe"), ("--pq-m", "pq_m")):
        default = getattr(FaissConfig(), field)
        parser.add_argument(flag, type=int, default=default, dest=field, help=f"ivfpq: {field} (default: {default})")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workdir", type=Path, default=None, help="where indexes are written (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="append the JSON lines to this file")
    args = parser.parse_args(argv)
    ivfpq_minimum = FaissConfig(
        index_type="ivfpq", ivf_nlist=args.ivf_nlist, ivf_nprobe=args.ivf_nprobe, pq_m=args.pq_m
    ).min_training_vectors
    if "ivfpq" in args.types and min(args.sizes) < ivfpq_minimum:
        parser.error(f"--sizes: ivfpq needs at least {ivfpq_minimum} vectors to train")
    if args.queries < 1:
        parser.error("--queries must be at least 1")
    if args.workdir is not None and not args.workdir.is_dir():
        parser.error(f"--workdir: {args.workdir} is not a directory")
    if args.encoder:
        for encoder_row in encoder_rows(args.encoder, args.queries):
            _emit(json.dumps(encoder_row), args.out)
    with tempfile.TemporaryDirectory(prefix="sleuth-scale-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        for size in args.sizes:
            rows: list[Row] = []
            if not args.no_dense:
                ivfpq = {"ivf_nlist": args.ivf_nlist, "ivf_nprobe": args.ivf_nprobe, "pq_m": args.pq_m}
                rows.extend(dense_rows(size, args.types, args.queries, args.seed, workdir, ivfpq))
            if args.bm25:
                rows.append(bm25_row(size, args.queries, args.seed, workdir))
            for row in rows:
                _emit(json.dumps(asdict(row)), args.out)
    return 0


def _emit(line: str, out: Path | None) -> None:
    print(line, flush=True)
    if out:
        with out.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
