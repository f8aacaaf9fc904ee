"""``sleuth eval compare``: B versus A, with how precisely the difference is measured."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from retrieval.corpus import numbered_lines
from retrieval.errors import DataFormatError

USER_ERRORS: tuple[type[BaseException], ...] = (DataFormatError,)


def register(groups: Any) -> None:
    evaluate = groups.group("eval", "offline evaluation")
    cmp = evaluate.add_parser(
        "compare",
        help="compare two runs: difference, 95%% bootstrap CI, randomization p-value, MDE",
        description=(
            "Search: two TREC run files and --qrels. Linking: two JSON-lines files of per-document "
            'counts {"id", "tp", "fp", "fn"} (as written by `sleuth eval link --per-doc-out`).'
        ),
    )
    cmp.add_argument("run_a", type=Path, help="the baseline (A)")
    cmp.add_argument("run_b", type=Path, help="the candidate (B)")
    cmp.add_argument("--qrels", type=Path, help="judgments (search runs)")
    cmp.add_argument("--metrics", default="ndcg@10,recall@100,mrr@10,map@100", help="search metrics, comma-separated")
    cmp.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples and permutations")
    cmp.add_argument("--seed", type=int, default=0, help="random seed of the resampling")
    cmp.add_argument("--json", action="store_true", help="print one JSON object")
    cmp.add_argument("--html", type=Path, help="write an HTML report with per-unit difference plots")
    cmp.add_argument("--png", type=Path, help="write the per-unit difference plot(s) as PNG")
    cmp.set_defaults(func=run_compare)


def read_counts(path: Path) -> dict[str, tuple[int, int, int]]:
    counts: dict[str, tuple[int, int, int]] = {}
    for lineno, line in numbered_lines(path, "per-document counts"):
        try:
            row = json.loads(line)
            counts[str(row["id"])] = (int(row["tp"]), int(row["fp"]), int(row["fn"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"{path}:{lineno}: expected {{'id', 'tp', 'fp', 'fn'}}: {exc}") from exc
    if not counts:
        raise DataFormatError(f"{path}: no documents")
    return counts


def _looks_like_counts(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    return first.lstrip().startswith("{")


def run_compare(args: argparse.Namespace) -> int:
    from retrieval.comparison import compare_counts, compare_runs
    from retrieval.corpus import load_qrels
    from retrieval.evaluation import read_trec_run
    from service.mlops.compare_report import text_table, write_html, write_png

    if args.resamples < 100:
        raise DataFormatError("--resamples must be at least 100")
    if _looks_like_counts(args.run_a):
        comparisons = [
            compare_counts(
                "f1", read_counts(args.run_a), read_counts(args.run_b), resamples=args.resamples, seed=args.seed
            )
        ]
    else:
        if args.qrels is None:
            raise DataFormatError("comparing search runs needs --qrels")
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        try:
            comparisons = compare_runs(
                read_trec_run(args.run_a),
                read_trec_run(args.run_b),
                load_qrels(args.qrels),
                metrics,
                resamples=args.resamples,
                seed=args.seed,
            )
        except ValueError as exc:
            raise DataFormatError(str(exc)) from exc
    if args.html:
        write_html(args.html, comparisons, str(args.run_a), str(args.run_b))
    if args.png:
        write_png(args.png, comparisons)
    if args.json:
        print(json.dumps({"a": str(args.run_a), "b": str(args.run_b), "metrics": [c.to_dict() for c in comparisons]}))
    else:
        print(text_table(comparisons, str(args.run_a), str(args.run_b)))
    return 0
