"""Serving benchmark matrix: a real server on this machine, loaded by ``sleuth bench``.

    .venv/bin/python -m scripts.bench_serving [--index DIR] [--workers 2] [--duration 15] [--write-docs]

Starts ``sleuth serve`` on the SciFact index (building it first if missing; embeddings come from
the cache), then runs ``sleuth bench`` in a separate process for every mode (bm25, dense, hybrid,
hybrid+rerank when ``--reranker`` is given, link when the server serves linking) and concurrency
(1, 4, 16, 64). It samples the resident memory of the server's processes throughout and reads
their kernel-recorded peaks (VmHWM) at the end. ``--write-docs`` replaces the section between
``<!-- serving:start -->`` and ``<!-- serving:end -->`` in docs/benchmarks.md (appending the
markers if absent).

The machine is shared: the load average before and after each run is recorded with the result.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.doc_sections import replace_section

ROOT = Path(__file__).resolve().parent.parent
SLEUTH = ROOT / ".venv" / "bin" / "sleuth"
SHARED = ROOT.parent / "shared" / "data"
SCIFACT = SHARED / "retrieval" / "scifact"
MSNBC = SHARED / "linking" / "benchmarks" / "msnbc.jsonl"
DOC = ROOT / "docs" / "benchmarks.md"

logger = logging.getLogger("bench_serving")


def loadavg() -> float:
    return os.getloadavg()[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def memory_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (from /proc/<pid>/stat)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


@dataclass
class MemoryWatch:
    """Samples the total RSS of a process tree; keeps the peak and each process's VmHWM."""

    pid: int
    peak_total_kib: int = 0
    hwm_kib: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        pids = process_tree(self.pid)
        self.peak_total_kib = max(self.peak_total_kib, sum(memory_kib(p, "VmRSS") for p in pids))
        for p in pids:
            hwm = memory_kib(p, "VmHWM")
            if hwm:
                self.hwm_kib[p] = max(self.hwm_kib.get(p, 0), hwm)

    def run(self) -> None:
        while not self._stop.wait(0.25):
            self.sample()

    def start(self) -> None:
        threading.Thread(target=self.run, daemon=True).start()

    def stop(self) -> None:
        self.sample()
        self._stop.set()


def all_ready(log: str, workers: int) -> bool:
    """True once the server log holds a ready line (``service.serving.builder.ready_message``) per worker."""
    return log.count("ready: serving") >= workers


class Server:
    """``sleuth serve`` in a subprocess, ready when each of its workers has logged "ready: serving"."""

    def __init__(self, args: argparse.Namespace, log: Path) -> None:
        self.port = free_port()
        self.workers = args.workers
        command = [
            str(SLEUTH),
            "--log-level",
            "INFO",
            "serve",
            "--index",
            str(args.index),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(args.workers),
            "--batch-wait-ms",
            str(args.batch_wait_ms),
            "--batch-size",
            str(args.batch_size),
            "--max-inflight",
            "1024",
        ]
        if args.torch_threads:
            command += ["--torch-threads", str(args.torch_threads)]
        command += ["--encoder-runtime", "torch" if args.bf16 else args.encoder_runtime]
        if args.bf16:
            command.append("--bf16")
        if args.reranker:
            command += ["--reranker", str(args.reranker)]
        if args.kb:
            command += ["--kb", str(args.kb)]
        if args.linker_model:
            command += ["--model", str(args.linker_model)]
        self.log = log
        self._sink = open(log, "wb")  # noqa: SIM115 (closed in stop())
        logger.info("starting: %s", " ".join(command))
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self._sink, stderr=subprocess.STDOUT)
        self.memory = MemoryWatch(self.process.pid)
        self.memory.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 600.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}); see {self.log}")
            if all_ready(self.log.read_text(errors="replace"), self.workers):
                return
            time.sleep(1.0)
        raise RuntimeError(f"the server was not ready within {timeout:.0f} s; see {self.log}")

    def serves_linking(self) -> bool:
        return "linking:" in self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.memory.stop()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(30)
        self._sink.close()
        return code


def bench(
    target: str,
    rpc: str,
    mode: str,
    concurrency: int,
    args: argparse.Namespace,
    rate: float | None = None,
    server_pid: int | None = None,
) -> dict[str, Any]:
    command = [
        str(SLEUTH),
        "--log-level",
        "WARNING",
        "bench",
        "--target",
        target,
        "--rpc",
        rpc,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--json",
    ]
    if rate is not None:
        command += ["--rate", f"{rate:.1f}"]
    if rpc == "search":
        command += ["--mode", mode, "--queries", str(args.queries)]
    else:
        command += ["--docs", str(args.docs), "--timeout", "120"]
    before = loadavg()
    cpu_before, wall_before = (cpu_seconds(server_pid) if server_pid else 0.0), time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.duration * 4 + 300)
    if out.returncode != 0:
        raise RuntimeError(f"sleuth bench failed: {out.stderr.strip()}")
    result = json.loads(out.stdout)
    result["load_before"], result["load_after"] = before, loadavg()
    if server_pid:
        # Includes the bench process's start-up and warm-up seconds: an average over the whole row.
        result["server_cpu"] = (cpu_seconds(server_pid) - cpu_before) / (time.perf_counter() - wall_before)
    logger.info(
        "%-6s %-6s c=%-3d%s %8.1f/s  p50 %7.1f  p95 %7.1f  p99 %7.1f ms  errors %s  load %.1f->%.1f  cpu %.2f/%.2f",
        rpc,
        mode,
        concurrency,
        f" open loop {rate:.0f}/s" if rate else "",
        result["throughput"],
        result["p50_ms"],
        result["p95_ms"],
        result["p99_ms"],
        result["errors"] or "-",
        before,
        result["load_after"],
        result.get("server_cpu", math.nan),
        result.get("client_cpu", math.nan),
    )
    return result


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0
    try:
        total = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        mem_gib = round(int(total.split()[1]) / 1024 / 1024)
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({cpu}, KVM guest), {mem_gib} GiB RAM, no GPU, Linux {platform.release()}"


def target_lines(results: list[dict[str, Any]]) -> list[str]:
    """The serving targets next to what this run measured."""

    def find(rpc: str, mode: str, concurrency: int | None = None, open_loop: bool = False) -> list[dict[str, Any]]:
        return [
            r
            for r in results
            if r["rpc"] == rpc
            and (rpc != "search" or r["mode"] == mode)
            and (concurrency is None or r["concurrency"] == concurrency)
            and bool(r.get("offered_rate")) == open_loop
        ]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = []
    for mode, label in (("hybrid", "Hybrid"), ("hybrid, onnx-int8", "Hybrid on `--encoder-runtime onnx-int8`")):
        at16 = find("search", mode, 16)
        if at16:
            x = at16[0]["throughput"]
            lines.append(f"- {label} at concurrency 16: {x:.0f} queries/s (target >= 300): {verdict(x >= 300)}.")
        half = find("search", mode, open_loop=True)
        if half:
            r = half[0]
            lines.append(
                f"- {label}, p99 at half that load (open loop, {r['offered_rate']:.0f}/s): {r['p99_ms']:.0f} ms "
                f"(target <= 50 ms at 150/s): {verdict(r['p99_ms'] <= 50 and r['offered_rate'] >= 150)}."
            )
    torch16 = find("search", "hybrid, torch", 16)
    if torch16:
        lines.append(
            "- Hybrid at concurrency 16 on the torch runtime (the default before ONNX): "
            f"{torch16[0]['throughput']:.0f} queries/s."
        )
    bm25 = find("search", "bm25")
    if bm25:
        best = max(bm25, key=lambda r: r["throughput"])
        lines.append(
            f"- BM25 only: best {best['throughput']:.0f} queries/s (concurrency {best['concurrency']}; "
            f"target >= 1,500): {verdict(best['throughput'] >= 1500)}."
        )
    for label in (None, "onnx-int8"):
        link = [r for r in find("link", "-") if r.get("variant") == label]
        if link:
            best = max(link, key=lambda r: r["throughput"])
            on = f" on {label}" if label else ""
            lines.append(
                f"- Link{on}, msnbc documents end to end: best {best['throughput']:.2f} documents/s (concurrency "
                f"{best['concurrency']}; target >= 10): {verdict(best['throughput'] >= 10)}."
            )
    for mode in ("bm25", "hybrid"):
        rows = [r for r in find("search", mode, 16) if r.get("server_cpu")]
        if rows and rows[0]["throughput"] > 0:
            r = rows[0]
            per_query = r["server_cpu"] / r["throughput"]
            lines.append(
                f"- {mode} at c=16 cost the server {per_query * 1000:.1f} ms of CPU per query ({r['server_cpu']:.2f} "
                f"cores for {r['throughput']:.0f} queries/s): two cores given wholly to the server would serve at "
                f"most about {2 / per_query:.0f} queries/s at that cost (a projection, not a measurement)."
            )
        two, one = find("search", mode, 16), find("search", f"{mode}, 1 worker", 16)
        if two and one:
            a, b = two[0], one[0]
            lines.append(
                f"- {mode} at c=16, 2 workers against 1: {a['throughput']:.0f} against {b['throughput']:.0f} "
                f"queries/s (loads {a['load_before']:.1f} and {b['load_before']:.1f} at the start of each row)."
            )
    return lines


def artifact_version(path: Path | None) -> str:
    """``kind@content-id`` from an artifact directory's manifest (``?`` when unreadable)."""
    if path is None:
        return "-"
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        return f"{manifest['kind']}@{manifest['content_id']}"
    except (OSError, ValueError, KeyError):
        return "?"


def reproduce_command(args: argparse.Namespace) -> str:
    parts = [".venv/bin/python -m scripts.bench_serving", f"--workers {args.workers}", f"--duration {args.duration:g}"]
    if args.reranker:
        parts.append("--reranker RERANKER_DIR")
    if args.kb:
        parts.append("--kb KB_DIR")
    if args.linker_model:
        parts.append("--linker-model LINKER_DIR")
    if args.bf16:
        parts.append("--bf16")
    elif args.encoder_runtime != "onnx":
        parts.append(f"--encoder-runtime {args.encoder_runtime}")
    if args.compare:
        parts.append("--compare")
    return " ".join([*parts, "--write-docs"])


def render(results: list[dict[str, Any]], memory: dict[str, Any], args: argparse.Namespace, started: str) -> str:
    lines = [
        "## Serving",
        "",
        f"Machine: {machine()}; shared with other jobs. Load average (1 min) over the runs: "
        f"{memory['load_min']:.1f} to {memory['load_max']:.1f} (2.0 = both cores busy), "
        f"{memory['load_start']:.1f} before the server started. Run {started}.",
        "",
        f"Server: `sleuth serve --workers {args.workers}`, index `{artifact_version(args.index)}` (SciFact, "
        "5,183 documents) "
        f"(micro-batches of at most {args.batch_size} queries, wait at most {args.batch_wait_ms} ms; "
        f"torch threads per worker {args.torch_threads or 'cores / workers'}, FAISS 1"
        f", encoder runtime {'torch, bfloat16' if args.bf16 else args.encoder_runtime}){memory['extra']}. "
        "Load: `sleuth bench`, closed loop, one connection per virtual user, "
        f"{args.duration:.0f} s measured after {args.warmup:.0f} s warm-up, in a separate process "
        "on the same 2 cores (it competes with the server for CPU). SciFact test queries, top 10. "
        f"Reranker `{artifact_version(args.reranker)}` (LambdaMART; `rerank` rows are hybrid + rerank). "
        f"Link rows: msnbc documents (20, 3,380 characters on average), KB `{artifact_version(args.kb)}`"
        + (
            f", model `{artifact_version(args.linker_model)}`."
            if args.linker_model
            else ", prior-only scorer (no `--model`)."
        ),
        "",
        "The load column is the machine's 1-minute load average before and after each row (this run's",
        "server and client account for about 2 to 3 of it; the rest is other jobs): rows run at different",
        "loads are not directly comparable.",
        "",
        "CPU columns: cores used by the server (all processes, averaged over the row including the load",
        "generator's start-up and warm-up) and by the load generator itself; 2.0 would be the whole machine.",
        "",
        "| rpc | mode | concurrency | throughput (/s) | p50 ms | p95 ms | p99 ms | errors | load | server CPU "
        "| client CPU |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for r in results:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "0"
        unit = "docs" if r["rpc"] == "link" else "queries"
        load = f"open loop {r['offered_rate']:.0f}/s" if r.get("offered_rate") else str(r["concurrency"])
        lines.append(
            f"| {r['rpc']} | {r['mode'] if r['rpc'] == 'search' else r.get('variant', '-')} | {load} | "
            f"{r['throughput']:.1f} {unit} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {errors} | "
            f"{r['load_before']:.1f} -> {r['load_after']:.1f} | {r.get('server_cpu', float('nan')):.2f} | "
            f"{r.get('client_cpu', float('nan')):.2f} |"
        )
    lines += [
        "",
        "Against the serving targets:",
        "",
        *target_lines(results),
        "",
        f"Peak server memory: **{memory['peak_total_mib']:.0f} MiB** resident in total (sampled every 0.25 s over "
        f"the whole run, all processes); per process peaks (VmHWM): {memory['per_process']}."
        + (f" Comparison servers' peaks: {memory['variants']}." if memory.get("variants") else ""),
        "",
        "Reproduce:",
        "",
        "```",
        reproduce_command(args),
        "```",
    ]
    return "\n".join(lines) + "\n"


def ensure_index(path: Path) -> None:
    if (path / "manifest.json").exists():
        return
    logger.info("building the SciFact index at %s", path)
    subprocess.run([str(SLEUTH), "index", "build", "--corpus", str(SCIFACT), "--out", str(path)], cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, default=Path("/tmp/idx-scifact-bench"))
    parser.add_argument("--queries", type=Path, default=SCIFACT / "queries.jsonl")
    parser.add_argument("--docs", type=Path, default=MSNBC, help="documents for the link rows (msnbc)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--torch-threads", type=int)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument(
        "--encoder-runtime", default="onnx", choices=["torch", "onnx", "onnx-int8"], help="the server's encoder runtime"
    )
    parser.add_argument("--bf16", action="store_true", help="serve with --bf16 (torch runtime, bfloat16 encoding)")
    parser.add_argument("--reranker", type=Path, help="reranker model directory (adds hybrid+rerank rows)")
    parser.add_argument("--kb", type=Path, help="KB directory for the link rows (default: the demo KB)")
    parser.add_argument("--linker-model", type=Path, help="linker model directory")
    parser.add_argument("--modes", default="bm25,dense,hybrid,rerank,link")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--link-concurrency", default="1,4,16")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also restart the server as 1 worker (bm25, hybrid at c=16), on the torch runtime and on onnx-int8 "
        "(hybrid at c=1, 16; int8 also its p99 at half load and link)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the raw results here")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    ensure_index(args.index)
    started = time.strftime("%Y-%m-%d %H:%M")
    load_start = loadavg()
    log = Path(f"/tmp/bench-serving-{os.getpid()}.log")
    server = Server(args, log)
    results: list[dict[str, Any]] = []
    try:
        server.wait_ready()
        time.sleep(2.0)
        modes = [m for m in args.modes.split(",") if m]
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        for mode in modes:
            if mode == "rerank" and not args.reranker:
                logger.info("no --reranker: skipping hybrid+rerank")
                continue
            if mode == "link":
                if not server.serves_linking():
                    logger.info("the server does not serve linking: skipping link")
                    continue
                for c in (int(x) for x in args.link_concurrency.split(",")):
                    results.append(bench(server.target, "link", "-", c, args, server_pid=server.process.pid))
                continue
            for c in concurrencies:
                results.append(bench(server.target, "search", mode, c, args, server_pid=server.process.pid))
            at16 = next((r for r in results if r["mode"] == mode and r["concurrency"] == 16), None)
            if mode == "hybrid" and at16 is not None and at16["throughput"] > 2:
                # The latency target is p99 at half the c=16 throughput: an open-loop run at that rate.
                results.append(
                    bench(
                        server.target,
                        "search",
                        mode,
                        16,
                        args,
                        rate=at16["throughput"] / 2,
                        server_pid=server.process.pid,
                    )
                )
    finally:
        code = server.stop()
    logger.info("server exited with %d; log %s", code, log)
    variants_memory = []
    if args.compare:
        int8 = argparse.Namespace(**{**vars(args), "encoder_runtime": "onnx-int8"})
        torch_runtime = argparse.Namespace(**{**vars(args), "encoder_runtime": "torch"})
        for label, variant, rows in (
            ("1 worker", argparse.Namespace(**{**vars(args), "workers": 1}), [("bm25", 16), ("hybrid", 16)]),
            ("torch", torch_runtime, [("hybrid", 1), ("hybrid", 16)]),
            ("onnx-int8", int8, [("hybrid", 1), ("hybrid", 16), ("hybrid", "half"), ("link", 8)]),
        ):
            extra = Server(variant, Path(f"/tmp/bench-serving-{os.getpid()}-{label.replace(' ', '')}.log"))
            try:
                extra.wait_ready()
                time.sleep(2.0)
                for mode, c in rows:
                    if mode == "link":
                        if not extra.serves_linking():
                            continue
                        row = bench(extra.target, "link", "-", int(c), variant, server_pid=extra.process.pid)
                        row["variant"] = label
                    elif c == "half":  # the p99 target: open loop at half this variant's c=16 throughput
                        at16 = next(r for r in results if r["mode"] == f"{mode}, {label}" and r["concurrency"] == 16)
                        rate = at16["throughput"] / 2
                        row = bench(extra.target, "search", mode, 16, variant, rate=rate, server_pid=extra.process.pid)
                        row["mode"] = f"{mode}, {label}"
                    else:
                        row = bench(extra.target, "search", mode, int(c), variant, server_pid=extra.process.pid)
                        row["mode"] = f"{mode}, {label}"
                    results.append(row)
            finally:
                extra.stop()
            variants_memory.append(f"{label}: {extra.memory.peak_total_kib / 1024:.0f} MiB")

    loads = [r["load_before"] for r in results] + [r["load_after"] for r in results]
    hwm = server.memory.hwm_kib
    memory = {
        "peak_total_mib": server.memory.peak_total_kib / 1024,
        "per_process": ", ".join(f"{v / 1024:.0f} MiB" for _, v in sorted(hwm.items())),
        "load_min": min(loads, default=load_start),
        "load_max": max(loads, default=load_start),
        "load_start": load_start,
        "extra": "",
        "variants": "; ".join(variants_memory),
    }
    logger.info("peak server RSS %.0f MiB (per process %s)", memory["peak_total_mib"], memory["per_process"])
    if args.json_out:
        args.json_out.write_text(json.dumps({"results": results, "memory": memory}, indent=2) + "\n")
    text = render(results, memory, args, started)
    print(text)
    if args.write_docs:
        replace_section(DOC, "serving", text)
        logger.info("wrote %s", DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
