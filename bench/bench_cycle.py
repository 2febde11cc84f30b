#!/usr/bin/env python3
"""Benchmark one agent cycle against a naive psutil scan of the same processes.

Spawns N idle processes (default 1,000), then in this process runs, interleaved
(A B B A ...), the agent's cycle (``Sampler.sample`` + ``SqliteStore.write``) and a
naive ``psutil.process_iter`` scan, timing both with ``time.process_time`` (CPU) and
``time.perf_counter`` (wall). The agent's memory is measured in a fresh subprocess
that imports only the agent (not psutil), runs the churn cycles back to back while
idle processes are killed and replaced between cycles, and reports its own VmRSS.

Targets (from the issue; printed, never asserted): a whole cycle costs less CPU
than the naive scan alone (aim for half); the agent's resident memory stays under
50 MB; 1,000 cycles with process churn show no memory growth.

Writes ``bench/results/bench_cycle.json`` and prints it as Markdown.
Run: ``python bench/bench_cycle.py [--procs N] [--cycles N] [--churn-cycles N]
[--churn-per-cycle K] [--json] [--results DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from benchutil import (
    add_output_args,
    bullets,
    count_pids,
    emit,
    kill_group,
    log,
    machine_info,
    model_config,
    naive_scan,
    section,
    stats,
    status_mb,
)

if TYPE_CHECKING:
    from agent.sampler import Sampler
    from exporters.sqlite_store import SqliteStore

TITLE = "Agent cycle versus a naive psutil scan, 1,000 idle processes"
ABOUT = (
    "Targets (core agent issue): a whole cycle costs less CPU than a naive "
    "`psutil.process_iter` scan alone (aim: half); resident memory under 50 MB; no "
    "memory growth over 1,000 cycles with process churn."
)

RSS_TARGET_MB = 50.0
GROWTH_TOLERANCE_MB = 1.0  # what "no memory growth" allows for allocator noise

# A tiny interpreter (python -S) forks the idle children, so they share its pages.
# Protocol on stdin: "churn K" kills the K oldest children and forks K new ones,
# answering "ok N"; "quit" or end of input kills every child and exits.
HELPER = r"""
import os, signal, sys

def spawn():
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(os.devnull, os.O_RDWR)
            os.dup2(fd, 0)
            os.dup2(fd, 1)
            while True:
                signal.pause()
        finally:
            os._exit(0)
    return pid

children = [spawn() for _ in range(int(sys.argv[1]))]
out = sys.stdout
out.write(" ".join(map(str, children)) + "\n")
out.flush()
for line in sys.stdin:
    cmd = line.split()
    if not cmd or cmd[0] != "churn":
        break
    k = min(int(cmd[1]), len(children))
    old, children = children[:k], children[k:]
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    for pid in old:
        os.waitpid(pid, 0)
    children.extend(spawn() for _ in range(k))
    out.write("ok %d\n" % len(children))
    out.flush()
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
"""


# -- idle processes -------------------------------------------------------------------


class IdleProcesses:
    """N sleeping processes in their own process group, killed on ``close``."""

    def __init__(self, n: int, timeout_s: float = 60.0) -> None:
        self.n = n
        self._closed = False
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", HELPER, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        atexit.register(self.close)
        line = self._stdout.readline()
        if not line and n:
            raise RuntimeError("the idle-process helper exited before it was ready")
        self.pids = [int(p) for p in line.split()]
        self._wait_sleeping(timeout_s)

    @property
    def _stdin(self) -> IO[str]:
        assert self._proc.stdin is not None
        return self._proc.stdin

    @property
    def _stdout(self) -> IO[str]:
        assert self._proc.stdout is not None
        return self._proc.stdout

    def _wait_sleeping(self, timeout_s: float) -> None:
        """Wait until /proc shows every child, asleep."""
        deadline = time.monotonic() + timeout_s
        pending = set(self.pids)
        while pending:
            for pid in list(pending):
                try:
                    raw = Path(f"/proc/{pid}/stat").read_bytes()
                except OSError:
                    continue
                if raw[raw.rfind(b")") + 2 :][:1] == b"S":
                    pending.discard(pid)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} idle processes never showed up in /proc")
            time.sleep(0.05)

    def churn(self, k: int) -> None:
        """Kill the k oldest children and fork k new ones."""
        self._stdin.write(f"churn {k}\n")
        self._stdin.flush()
        answer = self._stdout.readline()
        if not answer.startswith("ok"):
            raise RuntimeError(f"idle-process helper answered {answer!r}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
                self._stdin.write("quit\n")
                self._stdin.flush()
                self._proc.wait(timeout=30)
        finally:
            # Whatever is left of the group (the children, should the helper be gone).
            kill_group(self._proc.pid)
            self._proc.wait()


# -- the agent ------------------------------------------------------------------------


def make_agent(store_dir: str) -> tuple[Sampler, SqliteStore]:
    """A sampler (model sensor only: no RAPL, no NVML) and an unopened store."""
    from agent.config import StoreConfig
    from agent.sampler import Sampler
    from exporters.sqlite_store import SqliteStore

    db = os.path.join(store_dir, "sci-agent.db")
    cfg = model_config(store=StoreConfig(path=db))
    store = SqliteStore(db, cfg.store.retention_days, cfg.store.top_processes)
    return Sampler(cfg), store


def rss_mb(field: str = "VmRSS") -> float:
    return status_mb("self", field)


# -- CPU timing, in this process ------------------------------------------------------


def time_cycles(cycles: int, store_dir: str) -> dict[str, Any]:
    """Interleave agent cycles (A) and naive scans (B): AB BA BA AB, repeated."""
    import psutil

    import agent.sampler as sampler_module

    sampler, store = make_agent(store_dir)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sampler.open()  # the first scan reads cmdline, cgroup and owner of every process
    open_cpu, open_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    store.open()

    scan_cpu: list[float] = []
    attr_cpu: list[float] = []
    scanned: list[int] = []
    real_scan = sampler.scanner.scan
    real_attribute = vars(sampler_module)["attribute"]

    def timed_scan() -> Any:
        t = time.process_time()
        out = real_scan()
        scan_cpu.append(time.process_time() - t)
        scanned.append(len(out))
        return out

    def timed_attribute(*args: Any) -> Any:
        t = time.process_time()
        out = real_attribute(*args)
        attr_cpu.append(time.process_time() - t)
        return out

    setattr(sampler.scanner, "scan", timed_scan)  # noqa: B010 - instance-level wrap
    setattr(sampler_module, "attribute", timed_attribute)  # noqa: B010
    rec: dict[str, list[float]] = {
        k: [] for k in ("cycle", "cycle_wall", "sample", "write", "naive", "naive_wall")
    }
    naive_counts: list[int] = []

    def agent_cycle(keep: bool) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        result = sampler.sample()
        c1 = time.process_time()
        store.write([result])
        c2, w2 = time.process_time(), time.perf_counter()
        if keep:
            rec["cycle"].append(c2 - c0)
            rec["cycle_wall"].append(w2 - w0)
            rec["sample"].append(c1 - c0)
            rec["write"].append(c2 - c1)

    def naive(keep: bool) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        n = naive_scan(psutil)
        c1, w1 = time.process_time(), time.perf_counter()
        if keep:
            rec["naive"].append(c1 - c0)
            rec["naive_wall"].append(w1 - w0)
            naive_counts.append(n)

    try:
        for _ in range(2):  # warm-up: psutil's Process cache, SQLite pages
            agent_cycle(False)
            naive(False)
        scan_cpu.clear()
        attr_cpu.clear()
        scanned.clear()
        steps: list[Callable[[bool], None]] = [agent_cycle, naive]
        for i in range(cycles):
            order = steps if i % 4 in (0, 3) else steps[::-1]
            for step in order:
                step(True)
    finally:
        setattr(sampler_module, "attribute", real_attribute)  # noqa: B010
        store.close()
        sampler.close()

    procs = statistics.median(scanned)
    other = [s - a - b for s, a, b in zip(rec["sample"], scan_cpu, attr_cpu, strict=True)]
    ms = 1000.0

    def row(values: list[float], wall: list[float] | None = None) -> dict[str, float]:
        st = {k: v for k, v in stats(values, ms).items() if k in ("mean", "median", "min", "max")}
        st["us_per_process"] = statistics.median(values) * 1e6 / procs
        if wall is not None:
            st["wall_median"] = statistics.median(wall) * ms
        return st

    cycle_med, naive_med = statistics.median(rec["cycle"]), statistics.median(rec["naive"])
    return {
        "processes_scanned_median": procs,
        "naive_processes_median": statistics.median(naive_counts),
        "cycles": cycles,
        "unit": "ms of CPU time (process_time) unless named",
        "agent_cycle": row(rec["cycle"], rec["cycle_wall"]),
        "agent_scan": row(scan_cpu),
        "agent_attribution": row(attr_cpu),
        "agent_sample_other": row(other),
        "agent_store_write": row(rec["write"]),
        "naive_scan": row(rec["naive"], rec["naive_wall"]),
        "agent_first_scan_cold": {"cpu": open_cpu * ms, "wall": open_wall * ms},
        "ratio_agent_over_naive_median": cycle_med / naive_med,
        "ratio_agent_over_naive_mean": statistics.fmean(rec["cycle"])
        / statistics.fmean(rec["naive"]),
    }


# -- memory, in a fresh subprocess ----------------------------------------------------


def sqlite_memory_meter() -> Callable[[], int] | None:
    """``sqlite3_memory_used()`` of the SQLite library this Python links, if reachable."""
    import ctypes
    import importlib

    try:
        path = importlib.import_module("_sqlite3").__file__
        fn = ctypes.CDLL(path).sqlite3_memory_used
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    fn.restype, fn.argtypes = ctypes.c_int64, []
    return lambda: int(fn())


def sqlite_cache_cap_mb(store: SqliteStore) -> float | None:
    """The store connection's page-cache limit (``PRAGMA cache_size``) in MB."""
    db = store._db
    if db is None:
        return None
    size = int(db.execute("PRAGMA cache_size").fetchone()[0])
    page = int(db.execute("PRAGMA page_size").fetchone()[0])
    return (-size * 1024 if size < 0 else size * page) / 2**20


def memory_child(store_dir: str, cycles: int, warmup: int) -> None:
    """Run in the fresh subprocess: cycles in lockstep with the parent, then a report.

    After each cycle it writes ``c I`` and waits for ``g`` (the parent churns the
    idle processes in between); at the end it writes one ``R {json}`` line.
    """
    out = sys.stdout
    sqlite_used = sqlite_memory_meter()

    def sqlite_mb() -> float:
        return sqlite_used() / 2**20 if sqlite_used is not None else float("nan")

    def point(cycle: int) -> dict[str, float]:
        return {
            "cycle": cycle,
            "rss_mb": rss_mb(),
            "sqlite_mb": sqlite_mb(),
            "py_blocks": sys.getallocatedblocks(),
        }

    rss_start = rss_mb()
    sampler, store = make_agent(store_dir)
    rss_imported = rss_mb()
    sampler.open()
    store.open()
    rss_open = rss_mb()
    every = max(1, cycles // 10)
    trace: list[dict[str, float]] = []
    cpu: list[float] = []
    for i in range(1, cycles + 1):
        t = time.process_time()
        store.write([sampler.sample()])
        cpu.append(time.process_time() - t)
        if i % every == 0 or i == warmup:
            trace.append(point(i))
        out.write(f"c {i}\n")
        out.flush()
        if sys.stdin.readline().strip() != "g":
            break
    report = {
        "rss_start_mb": rss_start,
        "rss_after_import_mb": rss_imported,
        "rss_after_open_mb": rss_open,
        "rss_peak_mb": rss_mb("VmHWM"),
        "trace": trace,
        "sqlite_cache_cap_mb": sqlite_cache_cap_mb(store),
        "known_end": len(sampler.scanner._known),
        "live_end": count_pids(),
        "cycles_done": len(cpu),
        "cycle_cpu_ms_mean": statistics.fmean(cpu) * 1000,
        "cycle_cpu_ms_median": statistics.median(cpu) * 1000,
        "psutil_loaded": "psutil" in sys.modules,
    }
    store.close()
    sampler.close()
    out.write("R " + json.dumps(report) + "\n")
    out.flush()


def measure_memory(
    idle: IdleProcesses, cycles: int, per_cycle: int, store_dir: str
) -> dict[str, Any]:
    warmup = min(50, max(1, cycles // 2))
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-child",
            store_dir,
            str(cycles),
            str(warmup),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    report: dict[str, Any] | None = None
    churned = 0
    started = time.perf_counter()
    try:
        for line in child.stdout:
            if line.startswith("c "):
                idle.churn(per_cycle)
                churned += per_cycle
                child.stdin.write("g\n")
                child.stdin.flush()
            elif line.startswith("R "):
                report = json.loads(line[2:])
                break
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    if report is None:
        raise RuntimeError(f"memory child exited ({child.returncode}) without a report")
    report["warmup_cycle"] = warmup
    report["processes_churned"] = churned
    report["churn_per_cycle"] = per_cycle
    trace = report["trace"]
    warm = next(p for p in trace if p["cycle"] == warmup)
    end = trace[-1]
    report["warm"], report["end"] = warm, end
    report["rss_growth_mb"] = end["rss_mb"] - warm["rss_mb"]
    report["sqlite_growth_mb"] = end["sqlite_mb"] - warm["sqlite_mb"]
    report["rss_growth_besides_sqlite_mb"] = report["rss_growth_mb"] - report["sqlite_growth_mb"]
    report["py_blocks_growth"] = end["py_blocks"] - warm["py_blocks"]
    report["max_rss_after_warmup_mb"] = max(p["rss_mb"] for p in trace if p["cycle"] >= warmup)
    report["elapsed_s"] = time.perf_counter() - started
    return report


# -- report ---------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets(cpu: dict[str, Any], mem: dict[str, Any]) -> list[dict[str, Any]]:
    ratio = cpu["ratio_agent_over_naive_median"]
    rss_growth = mem["max_rss_after_warmup_mb"] - mem["warm"]["rss_mb"]
    besides = mem["rss_growth_besides_sqlite_mb"]
    cap = mem["sqlite_cache_cap_mb"]
    cap_text = f"{cap:.2f} MB cap" if cap is not None else "unknown cap"
    sqlite_end = mem["end"]["sqlite_mb"]
    bounded = cap is not None and sqlite_end <= cap * 1.25  # cache plus its small overhead
    n = mem["cycles_done"]
    return [
        {
            "target": "cycle CPU < naive scan CPU",
            "figure": f"ratio {ratio:.2f}",
            "status": _verdict(ratio < 1),
        },
        {
            "target": "aim: cycle CPU < half the naive scan",
            "figure": f"ratio {ratio:.2f}",
            "status": _verdict(ratio < 0.5),
        },
        {
            "target": f"agent RSS < {RSS_TARGET_MB:g} MB",
            "figure": f"peak (VmHWM) {mem['rss_peak_mb']:.1f} MB",
            "status": _verdict(mem["rss_peak_mb"] < RSS_TARGET_MB),
        },
        {
            "target": f"no RSS growth over {n} churn cycles, raw",
            "figure": f"{rss_growth:+.2f} MB after warm-up (tolerance {GROWTH_TOLERANCE_MB:g} MB)",
            "status": _verdict(rss_growth <= GROWTH_TOLERANCE_MB),
        },
        {
            "target": f"no growth over {n} churn cycles besides SQLite's bounded page cache",
            "figure": f"{besides:+.2f} MB besides SQLite; SQLite {mem['warm']['sqlite_mb']:.2f} → "
            f"{sqlite_end:.2f} MB ({cap_text}); Python blocks {mem['py_blocks_growth']:+d}",
            "status": _verdict(besides <= GROWTH_TOLERANCE_MB and bounded),
        },
    ]


def sections(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The result's sections: what it measures, CPU per cycle, memory, targets."""
    cpu, mem = figures["cpu"], figures["memory"]
    warm, end = mem["warm"], mem["end"]
    cap_mb = mem["sqlite_cache_cap_mb"]
    cap = f"{cap_mb:.2f} MB" if cap_mb is not None else "unknown"
    setup = (
        f"idle processes spawned: {figures['procs']}; processes on the host during timing: "
        f"{cpu['processes_scanned_median']:.0f} (agent), "
        f"{cpu['naive_processes_median']:.0f} (psutil)"
    )
    rows = []
    for label, key in (
        ("**agent cycle** (sample + store write)", "agent_cycle"),
        ("- scan of /proc", "agent_scan"),
        ("- attribution", "agent_attribution"),
        ("- /proc/stat, model sensor, rest of sample", "agent_sample_other"),
        ("- store write (SQLite)", "agent_store_write"),
        ("**naive psutil.process_iter scan**", "naive_scan"),
    ):
        r = cpu[key]
        wall = f"{r['wall_median']:.2f}" if "wall_median" in r else ""
        rows.append(
            [
                label,
                f"{r['mean']:.2f}",
                f"{r['median']:.2f}",
                f"{r['min']:.2f}",
                wall,
                f"{r['us_per_process']:.2f}",
            ]
        )
    cold = cpu["agent_first_scan_cold"]
    ratios = bullets(
        [
            f"ratio agent cycle / naive scan: **{cpu['ratio_agent_over_naive_median']:.2f}** "
            f"(medians), {cpu['ratio_agent_over_naive_mean']:.2f} (means)",
            f"agent's first scan (cold: cmdline, cgroup, owner of every process): "
            f"{cold['cpu']:.1f} ms CPU, {cold['wall']:.1f} ms wall",
        ]
    )
    memory = [
        ["RSS at start (interpreter + harness)", f"{mem['rss_start_mb']:.1f} MB"],
        ["RSS after importing the agent", f"{mem['rss_after_import_mb']:.1f} MB"],
        ["RSS after open (first scan)", f"{mem['rss_after_open_mb']:.1f} MB"],
        [f"RSS after warm-up (cycle {warm['cycle']})", f"{warm['rss_mb']:.1f} MB"],
        [f"RSS at the end (cycle {end['cycle']})", f"{end['rss_mb']:.1f} MB"],
        ["RSS growth, end − warm-up", f"{mem['rss_growth_mb']:+.2f} MB"],
        ["of which SQLite (sqlite3_memory_used)", f"{mem['sqlite_growth_mb']:+.2f} MB"],
        ["SQLite page-cache limit of the store connection", cap],
        ["Python allocated blocks, end − warm-up", f"{mem['py_blocks_growth']:+d}"],
        ["peak RSS (VmHWM)", f"{mem['rss_peak_mb']:.1f} MB"],
        [
            "known processes at the end / live pids in /proc",
            f"{mem['known_end']} / {mem['live_end']}",
        ],
        [
            "cycle CPU under churn, median (mean)",
            f"{mem['cycle_cpu_ms_median']:.2f} ({mem['cycle_cpu_ms_mean']:.2f}) ms",
        ],
    ]
    trace = [
        [str(p["cycle"]), f"{p['rss_mb']:.2f}", f"{p['sqlite_mb']:.2f}", str(p["py_blocks"])]
        for p in mem["trace"]
    ]
    return [
        section("", ABOUT),
        section("", bullets([setup])),
        section(
            f"CPU time per cycle ({cpu['cycles']} cycles each, interleaved A B B A, same process)",
            columns=[
                "measurement",
                "CPU mean (ms)",
                "CPU median (ms)",
                "CPU min (ms)",
                "wall median (ms)",
                "CPU µs/process (median)",
            ],
            rows=rows,
        ),
        section("", ratios),
        section(
            f"Agent memory (fresh subprocess, psutil not loaded: {not mem['psutil_loaded']})",
            f"{mem['cycles_done']} cycles back to back; between cycles {mem['churn_per_cycle']} "
            f"idle processes are killed and {mem['churn_per_cycle']} new ones forked "
            f"({mem['processes_churned']} in all); {mem['elapsed_s']:.1f} s.",
            ["figure", "value"],
            memory,
        ),
        section(
            "",
            columns=["cycle", "RSS (MB)", "SQLite memory (MB)", "Python allocated blocks"],
            rows=trace,
        ),
        section(
            "Targets",
            columns=["target", "figure", "status"],
            rows=[[t["target"], t["figure"], t["status"]] for t in figures["targets"]],
        ),
    ]


# -- main -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", type=int, default=1000, help="idle processes to spawn")
    p.add_argument("--cycles", type=int, default=50, help="timed cycles (agent and naive)")
    p.add_argument("--churn-cycles", type=int, default=1000, help="cycles of the memory run")
    p.add_argument(
        "--churn-per-cycle", type=int, default=10, help="processes replaced between cycles"
    )
    add_output_args(p)
    p.add_argument("--quick", action="store_true", help="procs=200, cycles=10, churn-cycles=100")
    args = p.parse_args(argv)
    if args.quick:
        args.procs, args.cycles, args.churn_cycles = 200, 10, 100
    if args.procs < 0 or args.cycles < 1 or args.churn_cycles < 1 or args.churn_per_cycle < 0:
        p.error("--procs and --churn-per-cycle must be ≥ 0; --cycles, --churn-cycles ≥ 1")
    args.churn_per_cycle = min(args.churn_per_cycle, args.procs)
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == ["--memory-child"]:
        memory_child(argv[1], int(argv[2]), int(argv[3]))
        return 0
    args = parse_args(argv)
    figures: dict[str, Any] = {"machine": machine_info(), "procs": args.procs}
    with tempfile.TemporaryDirectory(prefix="sci-bench-") as tmp:
        log(f"spawning {args.procs} idle processes")
        t = time.perf_counter()
        idle = IdleProcesses(args.procs)
        try:
            log(f"ready in {time.perf_counter() - t:.1f} s; timing {args.cycles} cycles")
            figures["cpu"] = time_cycles(args.cycles, os.path.join(tmp, "timing"))
            log(f"memory run: {args.churn_cycles} cycles with churn")
            figures["memory"] = measure_memory(
                idle, args.churn_cycles, args.churn_per_cycle, os.path.join(tmp, "memory")
            )
        finally:
            idle.close()
    figures["targets"] = targets(figures["cpu"], figures["memory"])
    emit(args, figures, "bench_cycle", TITLE, sections(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
