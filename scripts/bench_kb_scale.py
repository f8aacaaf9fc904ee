"""Knowledge-base scale: build and load time, memory, and candidate-generation latency.

    .venv/bin/python -m scripts.bench_kb_scale [--real] [--synthetic 100000 1000000] [--mentions 300]
        [--workdir DIR] [--out results.jsonl]

``--real`` measures the merged linking KB (../shared/data/linking/kb plus the AIDA additions in
../shared/data/linking/aida/kb, 41,419 entities). ``--synthetic N`` measures a KB of ``N``
generated entities whose names are drawn from the real KB's name words (so the name indexes see a
realistic spread of words), each with a one-line description, a type and two or three aliases.

For each KB, each step runs in a fresh child process so that its memory is its own:

* build: ``KnowledgeBase.from_files`` + ``save`` (what ``sleuth kb build`` does), seconds (wall and CPU);
* load: ``KnowledgeBase.load``, seconds and the resident memory it adds (VmRSS after minus before);
* candidates: ``CandidateGenerator.generate`` on names, p50/p99 ms, for surfaces that are aliases in
  the KB (the exact and variant lookups) and for the same surfaces with one letter changed (nothing
  matches exactly, so the fuzzy scan over all name keys runs: the worst case); mean CPU ms beside them.

Entity vectors are not part of this script: they are one 384-d float32 row per entity (1,536 bytes;
1.5 GB for 1M entities) and their cost to compute and search is that of a dense shard of the same
size (``scripts/bench_scale.py``). One JSON line per (kb, step) goes to stdout and ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LINKING = ROOT.parent / "shared" / "data" / "linking"
REAL_ENTITIES = [LINKING / "kb" / "entities.jsonl", LINKING / "aida" / "kb" / "entities.jsonl"]
REAL_ALIASES = [LINKING / "kb" / "aliases.tsv", LINKING / "aida" / "kb" / "aliases.tsv"]
TYPES = ("person", "organization", "place", "other")


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def write_synthetic_kb(count: int, directory: Path, seed: int, name_words: list[str]) -> tuple[Path, Path]:
    """Entity and alias files for ``count`` generated entities; returns (entities.jsonl, aliases.tsv)."""
    rng = random.Random(seed)
    entities, aliases = directory / "entities.jsonl", directory / "aliases.tsv"
    with entities.open("w", encoding="utf-8") as ents, aliases.open("w", encoding="utf-8") as alias_file:
        alias_file.write("alias\tentity\trank\n")
        seen: set[str] = set()
        for i in range(count):
            words = rng.sample(name_words, rng.choice((1, 2, 2, 3)))
            name = " ".join(words)
            entity_id = name if name not in seen else f"{name} ({i})"
            seen.add(entity_id)
            kind = rng.choice(TYPES)
            description = f"{name} is a {kind} described by a short synthetic sentence number {i}."
            row = {"id": entity_id, "name": name, "description": description, "aliases": [], "type": kind}
            ents.write(json.dumps(row) + "\n")
            alias_file.write(f"{name}\t{entity_id}\t{rng.randint(1, 5)}\n")
            alias_file.write(f"{words[-1]}\t{entity_id}\t{rng.randint(1, 30)}\n")
            if len(words) > 1:
                alias_file.write(f"{''.join(w[0] for w in words).upper()}\t{entity_id}\t{rng.randint(1, 30)}\n")
    return entities, aliases


def real_name_words(limit: int = 50_000) -> list[str]:
    """Distinct words of the real KB's entity names (letters only), in file order."""
    words: dict[str, None] = {}
    for path in REAL_ENTITIES:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                for word in json.loads(line)["name"].split():
                    if word.isalpha() and len(word) > 1:
                        words.setdefault(word)
                if len(words) >= limit:
                    return list(words)
    return list(words)


def _misspell(surface: str, rng: random.Random) -> str:
    position = rng.randrange(len(surface))
    letter = "x" if surface[position].lower() != "x" else "q"
    return surface[:position] + letter + surface[position + 1 :]


def _step_build(entity_paths: list[str], alias_paths: list[str], out: str) -> dict[str, Any]:
    from linking.kb import KnowledgeBase

    started, started_cpu = time.perf_counter(), time.process_time()
    kb = KnowledgeBase.from_files(entity_paths, alias_paths)
    kb.save(out)
    return {
        "build_s": time.perf_counter() - started,
        "build_cpu_s": time.process_time() - started_cpu,
        "entities": len(kb),
        "alias_strings": kb.alias_count(),
    }


def _step_load(directory: str, mentions: int, seed: int) -> dict[str, Any]:
    from linking.candidates import CandidateGenerator
    from linking.kb import KnowledgeBase

    before = _rss_bytes()
    started, started_cpu = time.perf_counter(), time.process_time()
    kb = KnowledgeBase.load(directory)
    load_s, load_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu
    added = _rss_bytes() - before
    rng = random.Random(seed)
    names = [entity.name for entity in rng.sample(kb.entities(), min(mentions, len(kb)))]
    generator = CandidateGenerator(kb)
    result: dict[str, Any] = {"load_s": load_s, "load_cpu_s": load_cpu_s, "load_rss_bytes": added}
    for label, surfaces in (("names", names), ("misspelled", [_misspell(n, rng) for n in names])):
        for surface in surfaces[:5]:
            generator.generate(surface)
        times, cpu, found = [], [], 0
        for surface in surfaces:
            started, started_cpu = time.perf_counter(), time.thread_time()
            found += bool(generator.generate(surface))
            cpu.append((time.thread_time() - started_cpu) * 1000)
            times.append((time.perf_counter() - started) * 1000)
        result[f"{label}_p50_ms"] = float(np.percentile(times, 50))
        result[f"{label}_p99_ms"] = float(np.percentile(times, 99))
        result[f"{label}_cpu_ms"] = float(np.mean(cpu))
        result[f"{label}_with_candidates"] = found / len(surfaces)
    return result


def _in_child(function: Any, *args: Any) -> dict[str, Any]:
    """Run ``function(*args)`` in a fresh spawned process (its memory is its own) and return its dict."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def measure(label: str, entity_paths: list[Path], alias_paths: list[Path], workdir: Path, mentions: int, seed: int):
    out = workdir / f"kb-{label}"
    built = _in_child(_step_build, [str(p) for p in entity_paths], [str(p) for p in alias_paths], str(out))
    loaded = _in_child(_step_load, str(out), mentions, seed)
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"kb": label, **built, "disk_bytes": disk, **loaded, "load_average": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="measure the merged shared + AIDA KB")
    parser.add_argument("--synthetic", type=int, nargs="*", default=[], help="sizes of generated KBs")
    parser.add_argument("--mentions", type=int, default=300, help="surfaces timed per KB and kind")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.real and not args.synthetic:
        parser.error("nothing to measure: give --real and/or --synthetic N")
    if any(n < 1 for n in args.synthetic):
        parser.error("--synthetic sizes must be positive")
    missing = [str(p) for p in REAL_ENTITIES + REAL_ALIASES if not p.is_file()]
    if missing:
        parser.error(f"the real KB files are missing (needed for --real and for name words): {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="sleuth-kb-scale-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        runs: list[tuple[str, list[Path], list[Path]]] = []
        if args.real:
            runs.append(("shared+aida", REAL_ENTITIES, REAL_ALIASES))
        words = real_name_words() if args.synthetic else []
        for count in args.synthetic:
            directory = workdir / f"synthetic-{count}-files"
            directory.mkdir()
            entities, aliases = write_synthetic_kb(count, directory, args.seed, words)
            runs.append((f"synthetic-{count}", [entities], [aliases]))
        for label, entity_paths, alias_paths in runs:
            line = json.dumps(measure(label, entity_paths, alias_paths, workdir, args.mentions, args.seed))
            print(line, flush=True)
            if args.out:
                with args.out.open("a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
