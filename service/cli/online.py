"""``sleuth report online``, ``sleuth report drift`` and ``sleuth export clicks``."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from retrieval.errors import DataFormatError


class ReportError(Exception):
    """A report cannot be made (no feedback database, metrics endpoint unreachable...)."""


USER_ERRORS: tuple[type[BaseException], ...] = (ReportError, DataFormatError)


def register(groups: Any) -> None:
    report = groups.group("report", "online reports")
    online = report.add_parser("online", help="CTR, zero-click, click MRR, successful sessions per arm, with CIs")
    online.add_argument("--feedback-db", type=Path, default=Path("var/feedback.db"), help="the server's feedback log")
    online.add_argument("--dwell-threshold", type=float, default=30.0, help="seconds for a successful click")
    online.add_argument("--json", action="store_true", help="print one JSON object")
    online.set_defaults(func=run_report_online)

    drift = report.add_parser("drift", help="population stability index per feature, from a server's /metrics")
    drift.add_argument("--metrics-url", default="http://127.0.0.1:9464/metrics", help="the server's /metrics URL")
    drift.add_argument("--json", action="store_true", help="print one JSON object")
    drift.set_defaults(func=run_report_drift)

    export = groups.group("export", "export data")
    clicks = export.add_parser("clicks", help="turn the feedback log into queries.jsonl + qrels.tsv (IPW-debiased)")
    clicks.add_argument("--feedback-db", type=Path, default=Path("var/feedback.db"), help="the server's feedback log")
    clicks.add_argument("--out", type=Path, required=True, help="directory for queries.jsonl and qrels.tsv")
    clicks.add_argument("--eta", type=float, default=1.0, help="position-bias exponent: P(examined|p) = (1/p)^eta")
    clicks.add_argument("--threshold", type=float, default=0.5, help="weighted CTR for relevance 1 (2x for 2)")
    clicks.add_argument("--min-impressions", type=int, default=1, help="judge a document only after this many")
    clicks.set_defaults(func=run_export_clicks)


def _open_log(path: Path) -> Any:
    from service.mlops.feedback import FeedbackLog

    if not path.is_file():
        raise ReportError(f"{path}: no feedback database (serve with --feedback-db, or pass its path)")
    return FeedbackLog(path)


def run_report_online(args: argparse.Namespace) -> int:
    from service.mlops.online_metrics import online_report

    log = _open_log(args.feedback_db)
    reports = online_report(log.events(), dwell_threshold_ms=int(args.dwell_threshold * 1000))
    if args.json:
        print(json.dumps({"arms": [r.to_dict() for r in reports]}))
        return 0
    if not reports:
        print("no searches with impressions in the log")
        return 0
    print(f"{'arm':<12} {'searches':>8} {'sessions':>8}  {'CTR':<26} {'zero-click':<26} {'click MRR':<26} success")
    for r in reports:
        print(
            f"{r.arm:<12} {r.searches:>8} {r.sessions:>8}  {r.ctr!s:<26} {r.zero_click_rate!s:<26} "
            f"{r.mrr!s:<26} {r.successful_session_rate}"
        )
    print("value [95% CI]: Wilson intervals for rates, bootstrap for MRR")
    return 0


def parse_drift_metrics(text: str) -> dict[str, dict[str, float]]:
    """Read ``sleuth_drift_psi`` and ``sleuth_drift_alert`` gauges from Prometheus text format."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        for metric, key in (("sleuth_drift_psi{", "psi"), ("sleuth_drift_alert{", "alert")):
            if line.startswith(metric):
                labels, value = line[len(metric) :].rsplit("} ", 1)
                feature = dict(p.split("=", 1) for p in labels.split(",") if "=" in p).get("feature", '""').strip('"')
                out.setdefault(feature, {})[key] = float(value)
    return out


def run_report_drift(args: argparse.Namespace) -> int:
    try:
        with urllib.request.urlopen(args.metrics_url, timeout=10) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError) as exc:
        raise ReportError(f"cannot read {args.metrics_url}: {exc}") from exc
    features = parse_drift_metrics(text)
    if not features:
        raise ReportError(f"{args.metrics_url} exports no drift gauges (does the index have drift references?)")
    if args.json:
        print(json.dumps(features))
        return 0
    print(f"{'feature':<14} {'PSI':>8}  alarm")
    for name, values in sorted(features.items()):
        print(f"{name:<14} {values.get('psi', float('nan')):8.4f}  {'YES' if values.get('alert') else 'no'}")
    return 0


def run_export_clicks(args: argparse.Namespace) -> int:
    from service.mlops.online_metrics import clicks_to_judgments

    log = _open_log(args.feedback_db)
    judgments = clicks_to_judgments(
        log.events(), eta=args.eta, threshold=args.threshold, min_impressions=args.min_impressions
    )
    if not judgments:
        raise ReportError(f"{args.feedback_db}: no impressions with query text to export")
    args.out.mkdir(parents=True, exist_ok=True)
    queries = {j.qid: j.query for j in judgments}
    with open(args.out / "queries.jsonl", "w", encoding="utf-8") as handle:
        for qid, text in sorted(queries.items()):
            handle.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with open(args.out / "qrels.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for j in judgments:
            handle.write(f"{j.qid}\t{j.doc_id}\t{j.relevance}\n")
    positives = sum(j.relevance > 0 for j in judgments)
    print(f"exported {len(judgments)} judgments ({positives} relevant) for {len(queries)} queries to {args.out}")
    return 0
