"""What ``sci.Tracker`` adds to the work it tracks: CPU overhead on a known busy loop.

The main thread spins for a known amount of its own CPU time (``time.thread_time``)
inside a ``Tracker`` at the default interval (5 s). The process's CPU time over the
same block (``time.process_time``: every thread) less the loop's own is what the
tracker cost while it ran: its sampling thread (one ``/proc`` pass, the sensors,
attribution and scoring per interval). Also measured: the tracker's own account of it
(``overhead_cpu_s``), the job's ``cpu_s`` against the process's CPU, one step mark
(a sample on the caller's thread), and the start and stop, which fall outside the
measured span (the agent's import and the baseline scan).

Writes ``bench/results/bench_tracker.json`` and prints it as Markdown.
Usage: ``python bench/bench_tracker.py [--seconds S] [--interval S] [--quick] [--json]
[--results DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from typing import Any

from benchutil import add_output_args, count_pids, emit, machine_info, section

from agent.config import loads
from sci import Tracker
from sci.tracker import DEFAULT_INTERVAL_S

TITLE = "sci.Tracker overhead"
ABOUT = (
    "Target (ML issue): the Tracker adds under 1 % CPU to the work it tracks. A "
    "known busy loop tracked at the default {interval:g} s interval; the tracker's own CPU "
    "against the loop's."
)


def spin(cpu_s: float) -> float:
    """Spin this thread for ``cpu_s`` of its CPU time; return what it used."""
    start = time.thread_time()
    end = start + cpu_s
    while time.thread_time() < end:
        x = 0
        for i in range(2000):  # pure-Python work, holding the GIL; the clock read ~every 50 µs
            x += i * i
    return time.thread_time() - start


def run(seconds: float, marks: int, interval_s: float = DEFAULT_INTERVAL_S) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = loads(
            f'[store]\nenabled = false\n[http]\nenabled = false\n[sensors]\nstate_dir = "{tmp}"\n'
        )
        t0 = time.process_time()
        tracker = Tracker(app="bench", config=cfg, interval_s=interval_s)  # default: 5 s
        tracker.start()
        t1 = time.process_time()
        work = spin(seconds)
        t2 = time.process_time()
        tracker.stop()
        t3 = time.process_time()

        mark_cpu = []
        with Tracker(app="marks", interval_s=3600, config=cfg) as marked:
            for _ in range(marks):
                spin(0.01)
                before = time.thread_time()
                marked.step()
                mark_cpu.append(time.thread_time() - before)
    process = t2 - t1
    return {
        "machine": machine_info(),
        "processes_on_host": count_pids(),
        "interval_s": tracker.interval_s,
        "work_cpu_s": work,
        "process_cpu_s": process,
        "overhead_cpu_s": process - work,
        "overhead_pct": 100 * (process - work) / work,
        "tracker_says_overhead_cpu_s": tracker.overhead_cpu_s,
        "job_cpu_s": tracker.cpu_s,
        "samples": tracker.result.totals.intervals if tracker.result else 0,
        "start_cpu_s": t1 - t0,
        "stop_cpu_s": t3 - t2,
        "mark_ms": 1000 * sorted(mark_cpu)[len(mark_cpu) // 2],
        "energy_joules": tracker.energy_joules,
        "carbon_g": tracker.carbon_g,
    }


def sections(f: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        ["busy loop (the tracked work), CPU s", f"{f['work_cpu_s']:.2f}"],
        [
            f"tracker while running ({f['samples']} samples, interval {f['interval_s']:g} s),"
            " CPU s",
            f"{f['overhead_cpu_s']:.3f}",
        ],
        ["**overhead, % of the tracked work**", f"**{f['overhead_pct']:.2f} %**"],
        ["the tracker's own account (`overhead_cpu_s`)", f"{f['tracker_says_overhead_cpu_s']:.3f}"],
        [
            "job `cpu_s` vs the process's CPU over the block",
            f"{f['job_cpu_s']:.2f} vs {f['process_cpu_s']:.2f}",
        ],
        ["one step mark (a sample on the caller's thread), median", f"{f['mark_ms']:.1f} ms"],
        ["start (agent import, sensors, baseline scan; not charged)", f"{f['start_cpu_s']:.2f} s"],
        ["stop (last sample, sensors closed)", f"{f['stop_cpu_s'] * 1000:.1f} ms"],
    ]
    about = ABOUT.format(interval=f["interval_s"])
    hosts = f"- processes on the host: {f['processes_on_host']} (one sample scans them all)"
    return [
        section("", about),
        section("Overhead", hosts, ["what", "figure"], rows),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="CPU seconds of busy loop")
    parser.add_argument("--quick", action="store_true", help="10 s of busy loop")
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_S, help="the Tracker's interval_s"
    )
    add_output_args(parser)
    args = parser.parse_args(argv)
    figures = run(10.0 if args.quick else args.seconds, marks=20, interval_s=args.interval)
    emit(args, figures, "bench_tracker", TITLE, sections(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
