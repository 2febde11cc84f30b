#!/usr/bin/env python3
"""The agent's footprint versus process count, beside a naive psutil scan and CodeCarbon.

For each count N (default 100, 1,000 and 5,000 idle processes, forked from a tiny helper
as in bench_cycle.py, so 5,000 fit a 2-core VM), two measurements:

1. **Cycle, in this process**: one agent cycle (``Sampler.sample`` + SQLite write) and one
   naive ``psutil.process_iter`` scan, interleaved A B B A (``bench_cycle.time_cycles``):
   CPU per cycle and per process.
2. **Daemons side by side**: child processes started together, sampling the same
   machine at the same interval for the same window: the agent (sample, score, SQLite
   write; local API off), a naive psutil scanner, and CodeCarbon's
   ``OfflineEmissionsTracker`` in machine and in process tracking mode. Each child's CPU
   time over the window is read from outside (its process CPU clock), its peak RSS from
   ``/proc/PID/status`` (VmHWM); the CPU spent before the window (imports, set-up, first
   measurement) is reported apart.

CodeCarbon is optional (``pip install codecarbon``, for the benchmark only). Figures
are printed, never asserted; read the ratios (the machine is shared and noisy).

Writes ``bench/results/bench_footprint.json`` and prints it as Markdown.
Run: ``python bench/bench_footprint.py [--counts 100,1000,5000] [--interval S]
[--window S] [--cycles N] [--json] [--results DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_cycle import IdleProcesses, time_cycles
from benchutil import (
    CODECARBON_MISSING,
    Child,
    add_output_args,
    bullets,
    codecarbon_energy,
    codecarbon_setup,
    count_pids,
    cpu_clock_s,
    emit,
    import_codecarbon,
    log,
    machine_info,
    offline_tracker,
    say,
    section,
    status_mb,
    stdin_stopper,
)

TITLE = "Footprint versus process count, beside psutil and CodeCarbon"
ABOUT = (
    "CPU per sampling interval and peak RSS of the agent, a naive psutil loop and "
    "CodeCarbon's tracker (machine and process modes) at 100, 1,000 and 5,000 "
    "processes, started together on the same machine. Read the ratios: the machine "
    "is shared and noisy."
)

DAEMONS = ("agent", "psutil", "codecarbon-machine", "codecarbon-process")
LABELS = {
    "agent": "**sci-agent** (sample, score, SQLite write)",
    "psutil": "naive psutil.process_iter scan",
    "codecarbon-machine": 'CodeCarbon tracker, tracking_mode="machine"',
    "codecarbon-process": 'CodeCarbon tracker, tracking_mode="process"',
}


# -- the children ---------------------------------------------------------------------


def child_agent(interval: float, store_dir: str) -> None:
    """The agent's daemon cycle (as ``sci-agent run``, local API off) until told to stop."""
    from agent.config import Config, HttpConfig, StoreConfig, validate
    from agent.loop import Loop
    from agent.runtime import Agent

    cfg = validate(
        Config(
            interval_s=interval,
            http=HttpConfig(enabled=False),
            store=StoreConfig(path=os.path.join(store_dir, "sci-agent.db")),
        )
    )
    agent = Agent(cfg, serve_http=False)
    sinks = agent.build_sinks()
    for sink in sinks:
        sink.open()
    agent.start()
    stop = stdin_stopper()
    sensors = agent.sampler.sensors
    say("ready", {"sensors": sensors.covering() if sensors else {}})
    loop = Loop(agent.measure, sinks, interval, stop)
    try:
        loop.run()
    finally:
        for sink in sinks:
            sink.close()
        agent.stop()
    say("done", {"cycles": loop.cycles})


def child_psutil(interval: float) -> None:
    """``bench_cycle``'s naive psutil scan, every ``interval`` seconds."""
    import psutil
    from benchutil import naive_scan

    naive_scan(psutil)
    stop = stdin_stopper()
    say("ready")
    cycles, next_tick = 0, time.monotonic() + interval
    while not stop.wait(max(0.0, next_tick - time.monotonic())):
        naive_scan(psutil)
        cycles += 1
        next_tick += interval
    say("done", {"cycles": cycles})


def child_codecarbon(interval: float, mode: str) -> None:
    """CodeCarbon's offline tracker sampling this machine until told to stop."""
    cc = import_codecarbon()
    if cc is None:
        say("missing")
        return
    tracker = offline_tracker(cc, interval, mode)
    tracker.start()
    say("ready", codecarbon_setup(cc, tracker))
    sys.stdin.readline()
    tracker.stop()
    say("done", codecarbon_energy(tracker))


# -- the parent -----------------------------------------------------------------------


def run_daemons(
    interval: float, window: float, tmp: Path, with_codecarbon: bool
) -> dict[str, dict[str, Any]]:
    """Start the daemons together, measure each one's CPU and RSS over the same window."""
    names = [d for d in DAEMONS if with_codecarbon or not d.startswith("codecarbon")]
    me = str(Path(__file__).resolve())
    children: dict[str, Child] = {}
    try:
        for name in names:
            argv = [sys.executable, me, "--child", name, str(interval)]
            if name == "agent":
                store = tmp / f"store-{time.monotonic_ns()}"
                store.mkdir()
                argv.append(str(store))
            children[name] = Child(name, argv, tmp / f"{name}.log", cwd=tmp)
        setup = {n: c.expect("ready", 180) for n, c in children.items()}
        time.sleep(min(interval, 1.0))  # past every first scheduled measurement
        cpu0 = {n: cpu_clock_s(c.pid) for n, c in children.items()}
        t0 = time.monotonic()
        processes = count_pids()
        time.sleep(window)
        cpu1 = {n: cpu_clock_s(c.pid) for n, c in children.items()}
        elapsed = time.monotonic() - t0
        rss = {
            n: (status_mb(c.pid, "VmHWM"), status_mb(c.pid, "VmRSS")) for n, c in children.items()
        }
        for c in children.values():
            c.send("stop")
        done = {n: c.expect("done", 60) for n, c in children.items()}
    finally:
        for c in children.values():
            c.close()
    intervals = elapsed / interval
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        cpu = cpu1[n] - cpu0[n]
        out[n] = {
            "cpu_ms_per_interval": cpu / intervals * 1000,
            "cpu_us_per_process_per_interval": cpu / intervals * 1e6 / processes,
            "cpu_percent_of_one_core": cpu / elapsed * 100,
            "startup_cpu_ms": cpu0[n] * 1000,
            "peak_rss_mb": rss[n][0],
            "rss_mb": rss[n][1],
            "window_s": elapsed,
            "processes_on_host": processes,
            "setup": setup[n],
            "done": done[n],
        }
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    cc = import_codecarbon()
    figures: dict[str, Any] = {
        "machine": machine_info(),
        "interval_s": args.interval,
        "window_s": args.window,
        "cycles": args.cycles,
        "codecarbon": getattr(cc, "__version__", None),
        "runs": [],
    }
    if cc is None:
        log(CODECARBON_MISSING)
    helpers: list[IdleProcesses] = []
    spawned = 0
    with tempfile.TemporaryDirectory(prefix="sci-footprint-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            for n in sorted(args.counts):
                if n > spawned:  # add to the idle set instead of starting over
                    log(f"forking {n - spawned} more idle processes (to {n})")
                    t = time.perf_counter()
                    helpers.append(IdleProcesses(n - spawned))
                    spawned = n
                    log(f"ready in {time.perf_counter() - t:.1f} s")
                log(f"N={n}: {args.cycles} interleaved cycles in-process")
                cycle = time_cycles(args.cycles, str(tmp / f"timing-{n}"))
                log(f"N={n}: daemons side by side for {args.window:g} s")
                daemons = run_daemons(args.interval, args.window, tmp, cc is not None)
                figures["runs"].append({"idle_spawned": n, "cycle": cycle, "daemons": daemons})
        finally:
            for h in reversed(helpers):
                h.close()
    return figures


# -- report ---------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "n/a"


def sections(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """What it measures, cycle CPU in one process, the daemons side by side, ratios."""
    runs = figures["runs"]
    setup = []
    cc_setup = next(
        (d["setup"] for r in runs for k, d in r["daemons"].items() if k == "codecarbon-machine"),
        None,
    )
    if figures["codecarbon"] is None:
        setup.append(CODECARBON_MISSING)
    elif cc_setup is not None:
        setup.append(
            f"CodeCarbon {cc_setup['version']}: hardware {', '.join(cc_setup['hardware'])}; "
            f"CPU mode `{cc_setup['cpu_mode']}` with TDP {cc_setup['tdp_w']} W over "
            f"{cc_setup['cpu_count']} CPUs (its own fallback model: no RAPL here), "
            f"{cc_setup['gpu_count']} GPU"
        )
    agent_sensors = next((r["daemons"]["agent"]["setup"].get("sensors") for r in runs), None)
    setup += [
        f"sci-agent sensors in the daemon child: {agent_sensors}",
        f"idle processes forked per run: {', '.join(str(r['idle_spawned']) for r in runs)}",
    ]
    cycle_rows = []
    for r in runs:
        c = r["cycle"]
        cycle_rows.append(
            [
                f"{r['idle_spawned']:,}",
                f"{c['processes_scanned_median']:.0f}",
                f"{c['agent_cycle']['median']:.2f}",
                f"{c['agent_cycle']['us_per_process']:.1f}",
                f"{c['naive_scan']['median']:.2f}",
                f"{c['naive_scan']['us_per_process']:.1f}",
                f"**{c['ratio_agent_over_naive_median']:.2f}**",
            ]
        )
    daemon_rows = []
    for r in runs:
        d = r["daemons"]
        agent = d["agent"]
        for name, f in d.items():
            daemon_rows.append(
                [
                    f"{f['processes_on_host']:,}",
                    LABELS[name],
                    f"{f['cpu_ms_per_interval']:.2f}",
                    f"{f['cpu_us_per_process_per_interval']:.2f}",
                    f"{f['cpu_percent_of_one_core']:.2f}",
                    f"{f['peak_rss_mb']:.1f}",
                    f"{f['startup_cpu_ms']:.0f}",
                    ""
                    if name == "agent"
                    else _ratio(agent["cpu_ms_per_interval"], f["cpu_ms_per_interval"]),
                    "" if name == "agent" else _ratio(agent["peak_rss_mb"], f["peak_rss_mb"]),
                ]
            )
    ratios = []
    for r in runs:
        d = r["daemons"]
        a = d["agent"]
        parts = [f"cycle agent ÷ naive psutil {r['cycle']['ratio_agent_over_naive_median']:.2f}"]
        for name in DAEMONS[1:]:
            if name in d:
                cpu = _ratio(a["cpu_ms_per_interval"], d[name]["cpu_ms_per_interval"])
                rss = _ratio(a["peak_rss_mb"], d[name]["peak_rss_mb"])
                parts.append(f"daemon agent ÷ {name}: CPU {cpu}, peak RSS {rss}")
        ratios.append(f"{r['idle_spawned']:,} idle processes: " + "; ".join(parts))
    return [
        section("", ABOUT),
        section("", bullets(setup)),
        section(
            f"Cycle CPU in one process ({figures['cycles']} cycles each, interleaved A B B A)",
            columns=[
                "idle processes",
                "processes scanned",
                "agent cycle CPU (ms, median)",
                "agent µs/process",
                "naive psutil scan CPU (ms, median)",
                "naive µs/process",
                "agent ÷ naive",
            ],
            rows=cycle_rows,
        ),
        section(
            f"Daemons side by side: every {figures['interval_s']:g} s for "
            f"{figures['window_s']:g} s, started together",
            "CPU is each child's process CPU clock over the same window (every thread), per "
            "sampling interval; peak RSS is its VmHWM at the end of the window; startup is the "
            "CPU it used before the window (imports, set-up, first measurement).",
            [
                "processes on host",
                "daemon",
                "CPU ms / interval",
                "CPU µs / process / interval",
                "% of one core",
                "peak RSS (MB)",
                "startup CPU (ms)",
                "agent ÷ this, CPU",
                "agent ÷ this, peak RSS",
            ],
            daemon_rows,
        ),
        section("", READING),
        section("Ratios", bullets(ratios)),
    ]


READING = bullets(
    [
        "agent ÷ this below 1: the agent costs less. The daemons run at the same time, "
        "so they share the CPUs and the noise alike.",
        "CodeCarbon's machine mode reads machine-wide figures only (`psutil.cpu_times`, "
        "`virtual_memory`, its load model): its cost does not grow with the processes, "
        "and it reports nothing per process or application.",
        "Its process mode follows one process tree (the tracker's process and its "
        "descendants) but finds it by walking every process (`Process.children("
        "recursive=True)` reads every /proc/PID/stat), every second and at each "
        "measurement, so it grows with the process count like the naive scan.",
    ]
)


# -- main -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--counts",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[100, 1000, 5000],
        help="idle process counts, comma-separated (default 100,1000,5000)",
    )
    p.add_argument("--interval", type=float, default=1.0, help="sampling interval, s")
    p.add_argument("--window", type=float, default=20.0, help="measured window per count, s")
    p.add_argument("--cycles", type=int, default=30, help="in-process timed cycles per count")
    add_output_args(p)
    p.add_argument("--quick", action="store_true", help="counts 100,1000; window 5 s; 5 cycles")
    args = p.parse_args(argv)
    if args.quick:
        args.counts, args.window, args.cycles = [100, 1000], 5.0, 5
    if not args.counts or min(args.counts) < 0 or args.interval <= 0 or args.window <= 0:
        p.error("--counts must be ≥ 0; --interval and --window > 0")
    if args.cycles < 1:
        p.error("--cycles must be ≥ 1")
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        kind, interval = argv[1], float(argv[2])
        if kind == "agent":
            child_agent(interval, argv[3])
        elif kind == "psutil":
            child_psutil(interval)
        else:
            child_codecarbon(interval, kind.removeprefix("codecarbon-"))
        return 0
    args = parse_args(argv)
    figures = measure(args)
    emit(args, figures, "bench_footprint", TITLE, sections(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
