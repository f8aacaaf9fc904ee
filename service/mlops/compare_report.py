"""Rendering a paired comparison: a text table, JSON, and an HTML page with per-unit difference plots."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from retrieval.comparison import MetricComparison


def text_table(comparisons: Sequence[MetricComparison], name_a: str, name_b: str) -> str:
    lines = [
        f"A = {name_a}",
        f"B = {name_b}",
        f"{'metric':<12} {'units':>5} {'A':>8} {'B':>8} {'B-A':>8}  {'95% CI':<19} {'p':>7} {'MDE':>7}",
    ]
    for c in comparisons:
        flag = " *" if c.significant else ""
        lines.append(
            f"{c.metric:<12} {c.units:>5} {c.mean_a:8.4f} {c.mean_b:8.4f} {c.difference:+8.4f}  "
            f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}] {c.p_value:7.4f} {c.mde:7.4f}{flag}"
        )
    lines.append("CI: paired bootstrap; p: paired randomization test; MDE: 80% power at 5%; * p < 0.05")
    return "\n".join(lines)


def difference_plot_png(comparison: MetricComparison) -> bytes:
    """Per-unit differences B - A, sorted, as a bar chart (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diffs = sorted(comparison.per_unit_difference.values())
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    colors = ["#2a9d8f" if d > 0 else "#e76f51" if d < 0 else "#999999" for d in diffs]
    ax.bar(range(len(diffs)), diffs, color=colors, width=1.0)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axhline(comparison.difference, color="#264653", linestyle="--", linewidth=1, label="mean difference")
    ax.set_title(f"{comparison.metric}: B - A per unit (sorted)")
    ax.set_xlabel(f"{comparison.units} units")
    ax.set_ylabel("difference")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_html(path: Path, comparisons: Sequence[MetricComparison], name_a: str, name_b: str) -> None:
    rows = "".join(
        "<tr>"
        f"<td>{html.escape(c.metric)}</td><td>{c.units}</td><td>{c.mean_a:.4f}</td><td>{c.mean_b:.4f}</td>"
        f"<td>{c.difference:+.4f}</td><td>[{c.ci_low:+.4f}, {c.ci_high:+.4f}]</td>"
        f"<td>{c.p_value:.4f}</td><td>{c.mde:.4f}</td></tr>"
        for c in comparisons
    )
    plots = "".join(
        f'<h2>{html.escape(c.metric)}</h2><img alt="per-unit differences of {html.escape(c.metric)}" '
        f'src="data:image/png;base64,{base64.b64encode(difference_plot_png(c)).decode()}">'
        for c in comparisons
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sleuth comparison</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head>
<body><h1>B versus A</h1><p>A = {html.escape(name_a)}<br>B = {html.escape(name_b)}</p>
<table><tr><th>metric</th><th>units</th><th>A</th><th>B</th><th>B-A</th><th>95% CI (paired bootstrap)</th>
<th>p (randomization)</th><th>MDE (80% power)</th></tr>{rows}</table>{plots}</body></html>
"""
    path.write_text(page, encoding="utf-8")


def write_png(path: Path, comparisons: Sequence[MetricComparison]) -> None:
    """One PNG per metric: ``path`` for the first, ``path.stem-METRIC.png`` beside it for the others."""
    for i, comparison in enumerate(comparisons):
        target = path if i == 0 else path.with_name(f"{path.stem}-{comparison.metric.replace('@', '_at_')}.png")
        target.write_bytes(difference_plot_png(comparison))
