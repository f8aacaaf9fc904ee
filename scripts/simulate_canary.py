"""Canary simulation: synthetic users replay SciFact queries through a real server.

A 10% canary serves the learned reranker, the other 90% fusion only (an experiment file; other
arms with ``--control``/``--candidate``). Each
user issues a few queries (``session_id`` = the user), sees the top 10, and clicks according to a
position-based click model driven by the qrels: a result at rank r is examined with probability
``1 / r ** 0.8``; an examined relevant document is clicked with probability 0.9 (dwell 40-180 s), a
non-relevant one with 0.08 (dwell 3-25 s). Impressions and clicks go back through the Feedback RPC
into the SQLite log, and the online report then compares the arms.

    .venv/bin/python -m scripts.simulate_canary --index var/scifact --reranker var/reranker \\
        [--users 2500 --queries-per-user 3 --share 0.1 --seed 7 --write-doc]

``--write-doc`` puts the report into docs/operations.md between the ``canary`` markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import grpc  # noqa: E402

from retrieval.corpus import load_qrels, load_queries  # noqa: E402
from service.config import ServerConfig  # noqa: E402
from service.generated.sleuth.v1 import feedback_pb2, feedback_pb2_grpc, search_pb2, search_pb2_grpc  # noqa: E402
from service.serving.builder import create_server  # noqa: E402
from service.serving.loading import load_services  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "retrieval" / "scifact"


def click_model(hits: list[search_pb2.Hit], judged: dict[str, int], rng: random.Random) -> list[tuple[str, int, int]]:
    """(doc id, rank, dwell ms) of the clicks a synthetic user makes on one result page."""
    clicks = []
    for hit in hits[:10]:
        if rng.random() >= 1.0 / hit.rank**0.8:
            continue
        relevant = judged.get(hit.doc_id, 0) >= 1
        if rng.random() < (0.9 if relevant else 0.08):
            dwell = rng.randint(40_000, 180_000) if relevant else rng.randint(3_000, 25_000)
            clicks.append((hit.doc_id, hit.rank, dwell))
    return clicks


def run_user(address: str, user: int, queries, qrels, per_user: int, seed: int) -> tuple[str, int]:
    rng = random.Random(seed * 1_000_003 + user)
    with grpc.insecure_channel(address) as channel:
        search = search_pb2_grpc.SearchServiceStub(channel)
        feedback = feedback_pb2_grpc.FeedbackServiceStub(channel)
        arm = ""
        for _ in range(per_user):
            query = rng.choice(queries)
            response = search.Search(
                search_pb2.SearchRequest(query=query.text, top_k=10, session_id=f"user-{user}"), timeout=60
            )
            arm = response.arm
            events = [
                feedback_pb2.FeedbackEvent(
                    kind="impression",
                    request_id=response.request_id,
                    session_id=f"user-{user}",
                    arm=arm,
                    query=query.text,
                    doc_id=h.doc_id,
                    position=h.rank,
                )
                for h in response.hits
            ]
            for doc_id, rank, dwell in click_model(list(response.hits), qrels[query.qid], rng):
                events.append(
                    feedback_pb2.FeedbackEvent(
                        kind="click",
                        request_id=response.request_id,
                        session_id=f"user-{user}",
                        arm=arm,
                        doc_id=doc_id,
                        position=rank,
                        dwell_ms=dwell,
                    )
                )
            feedback.Record(feedback_pb2.FeedbackRequest(events=events), timeout=60)
    return arm, per_user


async def serve_and_simulate(args: argparse.Namespace, workdir: Path) -> tuple[Path, float, int]:
    experiment = workdir / "experiment.json"
    experiment.write_text(
        json.dumps(
            {
                "name": "canary",
                "candidate_share": args.share,
                "control": json.loads(args.control),
                "candidate": json.loads(args.candidate),
            }
        )
    )
    db = args.feedback_db or workdir / "feedback.db"
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        index=args.index,
        reranker=args.reranker,
        experiment=experiment,
        feedback_db=db,
        threads=4,
        admin=False,
    )
    services = await asyncio.to_thread(load_services, config)
    running = await create_server(config, services)
    await running.start()
    port = running.port
    qrels = load_qrels(DATA / "qrels" / f"{args.split}.tsv")
    queries = [q for q in load_queries(DATA / "queries.jsonl") if q.qid in qrels]
    started = time.perf_counter()
    done = 0
    lock = threading.Lock()

    def one(user: int) -> None:
        nonlocal done
        run_user(f"127.0.0.1:{port}", user, queries, qrels, args.queries_per_user, args.seed)
        with lock:
            done += 1
            if done % 250 == 0:
                print(f"  {done} users simulated", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        await asyncio.gather(*[asyncio.wrap_future(pool.submit(one, u)) for u in range(args.users)])
    elapsed = time.perf_counter() - started
    await running.stop(5)
    return db, elapsed, args.users * args.queries_per_user


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="a SciFact index directory")
    parser.add_argument("--reranker", type=Path, required=True, help="a reranker model directory")
    parser.add_argument("--users", type=int, default=2500)
    parser.add_argument("--queries-per-user", type=int, default=3)
    parser.add_argument("--share", type=float, default=0.1, help="the canary's share of users")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--control", default='{"rerank": false}', help="control arm settings (JSON)")
    parser.add_argument("--candidate", default='{"rerank": true}', help="candidate arm settings (JSON)")
    parser.add_argument("--split", default="test", choices=["train", "test"], help="which judged queries users ask")
    parser.add_argument("--feedback-db", type=Path, help="keep the feedback log here (default: a temporary file)")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    import logging

    access = logging.getLogger("sleuth.access")  # one JSON line per request: not wanted here
    access.addHandler(logging.NullHandler())
    access.setLevel(logging.WARNING)

    from service.mlops.feedback import FeedbackLog
    from service.mlops.online_metrics import arm_differences, online_report

    with tempfile.TemporaryDirectory() as tmp:
        db, elapsed, searches = asyncio.run(serve_and_simulate(args, Path(tmp)))
        events = list(FeedbackLog(db).events())
        reports = {r.arm: r for r in online_report(events)}
        differences = arm_differences(events)
    lines = [
        f"{searches} searches by {args.users} synthetic users ({args.queries_per_user} each) in {elapsed:.0f} s; "
        f"canary share {args.share:.0%}; seed {args.seed}; {args.split} queries; control {args.control}, "
        f"candidate {args.candidate}.",
        "",
        "| arm | searches | users | CTR | zero-click rate | click MRR | successful sessions |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in ("control", "candidate"):
        r = reports.get(arm)
        if r is not None:
            lines.append(
                f"| {arm} | {r.searches} | {r.sessions} | {r.ctr} | {r.zero_click_rate} | {r.mrr} | "
                f"{r.successful_session_rate} |"
            )
    lines.append("")
    lines.append("value [95% CI]: Wilson intervals for rates, bootstrap for click MRR.")
    if differences:
        lines += [
            "",
            "| candidate - control | difference | 95% CI | detected | MDE (80% power) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {d.metric} | {d.difference:+.4f} | [{d.low:+.4f}, {d.high:+.4f}] | {'yes' if d.detected else 'no'} "
            f"| {d.mde:.4f} |"
            for d in differences
        ]
    text = "\n".join(lines)
    print(text)
    if args.write_doc:
        from scripts.doc_sections import replace_section

        replace_section(ROOT / "docs" / "operations.md", "canary", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
