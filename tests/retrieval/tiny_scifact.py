"""A tiny slice of SciFact train for training tests: the first judged queries, their relevant
documents and some others."""

from __future__ import annotations

import json
from pathlib import Path

TINY_QUERIES = 12
TINY_OTHERS = 30


def write_tiny_scifact(scifact_dir: Path, out: Path) -> Path:
    """The first 12 judged SciFact train queries, their relevant documents and the first 30 other
    documents, as ``corpus.jsonl``, ``queries.jsonl`` and ``train.tsv`` under ``out``."""
    rows = [line.split("\t") for line in (scifact_dir / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(row[0] for row in rows))[:TINY_QUERIES]
    chosen = [row for row in rows if row[0] in qids]
    judged = {row[1] for row in chosen}
    docs = [json.loads(line) for line in (scifact_dir / "corpus.jsonl").read_text().splitlines()]
    keep = [d for d in docs if d["_id"] in judged] + [d for d in docs if d["_id"] not in judged][:TINY_OTHERS]
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in keep))
    queries = [json.loads(line) for line in (scifact_dir / "queries.jsonl").read_text().splitlines()]
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries if q["_id"] in qids))
    (out / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(r) + "\n" for r in chosen))
    return out
