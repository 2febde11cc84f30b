#!/usr/bin/env python3
"""Attribution accuracy on workloads of known CPU shares, beside CodeCarbon's process mode.

Three workloads run as child processes while the agent (``Sampler``, model sensor,
``[[apps]]`` rules by command-line marker) samples every second for ~20 s:

- ``full``: a busy loop, 100 % of a core;
- ``quarter``: busy 5 ms, asleep 15 ms (25 % of a core by duty cycle);
- ``short``: a spawner that forks, every 100 ms, a process that burns ~20 ms of CPU and
  exits; the spawner reaps it, so its CPU lands in the spawner's ``cutime``.

Truth is each workload's own kernel accounting, read from ``/proc/PID/stat`` at the
instants the agent samples (``utime + stime``, plus ``cutime + cstime`` for the reaped
children). The expected energy of a workload in an interval is the interval's dynamic
("active") CPU energy, what the model draws above its zero-load floor, × its CPU ticks ÷
the machine's busy ticks. Reported: each workload's
attributed share of the active CPU energy against its share of the busy CPU time, the
unattributed bucket against the short-lived children's expected energy, and
conservation (measured − attributed − idle − unattributed), summed and per interval.

With CodeCarbon installed (``pip install codecarbon``, for the benchmark only), each
workload is started by a wrapper that runs an ``OfflineEmissionsTracker`` in
``tracking_mode="process"`` (it tracks the process that runs it and its descendants,
so the wrapper is the workload's parent), and one more tracker runs in machine mode;
their figures are printed beside the agent's.

Writes ``bench/results/bench_accuracy.json`` and prints it as Markdown.
Run: ``python bench/bench_accuracy.py [--seconds S] [--interval S] [--no-codecarbon]
[--json] [--results DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchutil import (
    CLK_TCK,
    CODECARBON_MISSING,
    Child,
    add_output_args,
    bullets,
    codecarbon_energy,
    codecarbon_setup,
    cpu_clock_s,
    emit,
    import_codecarbon,
    kill_group,
    log,
    machine_info,
    model_config,
    offline_tracker,
    say,
    section,
    stat_ticks,
)

if TYPE_CHECKING:
    from agent.records import CpuActivity, IntervalResult
    from agent.sampler import Sampler

TITLE = "Attribution accuracy on workloads of known CPU shares"
ABOUT = (
    "A busy loop, a 25 % duty cycle and a spawner of 20 ms processes every 100 ms; "
    "attributed energy against each workload's own CPU accounting, the unattributed "
    "bucket, conservation, and CodeCarbon's process mode on the same workloads."
)
KINDS = ("full", "quarter", "short")
MARKER = "sci-bench-wl"

# The workloads (python -S: no site, small and quick to start). argv[1] is the kind,
# argv[2] the marker the [[apps]] rules match.
WORKLOAD = r"""
import os, sys, time
kind = sys.argv[1]
if kind == "full":
    while True:
        pass
elif kind == "quarter":
    tick = time.monotonic()
    while True:
        end = tick + 0.005
        while time.monotonic() < end:
            pass
        tick += 0.020
        rest = tick - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        else:
            tick = time.monotonic()
elif kind == "short":
    tick = time.monotonic()
    while True:
        if os.fork() == 0:
            while time.process_time() < 0.020:
                pass
            os._exit(0)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        tick += 0.100
        rest = tick - time.monotonic()
        if rest > 0:
            time.sleep(rest)
"""


def workload_argv(kind: str) -> list[str]:
    return [sys.executable, "-S", "-c", WORKLOAD, kind, f"{MARKER}={kind}"]


# -- CodeCarbon wrapper (a child) -----------------------------------------------------


def cc_wrapper(kind: str, mode: str, interval: float) -> None:
    """Run a tracker in this process; start the workload ``kind`` (or none) as a child."""
    cc = import_codecarbon()
    if cc is None:
        say("missing")
        return
    tracker = offline_tracker(cc, interval, mode)
    setup = codecarbon_setup(cc, tracker)
    proc = None
    if kind != "none":
        proc = subprocess.Popen(workload_argv(kind), start_new_session=True)
    say("ready", {"pid": proc.pid if proc else None, **setup})
    try:
        if sys.stdin.readline().strip() != "go":
            return
        tracker.start()
        cpu0 = time.process_time()
        say("started")
        sys.stdin.readline()
        tracker.stop()
        own = time.process_time() - cpu0
    finally:
        if proc is not None:
            kill_group(proc.pid)
            proc.wait()
    say("done", {**codecarbon_energy(tracker), "tracker_process_cpu_s": own})


# -- the agent's run ------------------------------------------------------------------


def make_sampler(interval: float) -> Sampler:
    """A sampler with the power model only, naming the workloads by their markers."""
    from agent.config import AppRule
    from agent.sampler import Sampler as _Sampler

    apps = tuple(AppRule(k, cmdline=rf"{MARKER}={k}\b") for k in KINDS)
    return _Sampler(model_config(interval_s=interval, apps=apps))


def interval_record(
    r: IntervalResult,
    cpu: CpuActivity,
    before: dict[str, tuple[int, int, int, int]],
    after: dict[str, tuple[int, int, int, int]],
    pids: dict[str, int],
) -> dict[str, Any]:
    """One interval: the agent's figures and the workloads' own accounting."""
    cpu_j = sum(c.joules for c in r.components if c.kind == "cpu")
    active = sum(c.dynamic_joules for c in r.components if c.kind == "cpu")  # above the floor
    apps = {a.app: a for a in r.apps}
    own = {k: (after[k][0] + after[k][1]) - (before[k][0] + before[k][1]) for k in KINDS}
    reaped = {k: (after[k][2] + after[k][3]) - (before[k][2] + before[k][3]) for k in KINDS}
    return {
        "interval_s": r.interval_s,
        "busy_ticks": cpu.busy_ticks,
        "total_ticks": cpu.total_ticks,
        "measured_j": r.total_joules,
        "cpu_j": cpu_j,
        "active_cpu_j": active,
        "app_cpu_j": {a: e.cpu_joules for a, e in apps.items()},
        "app_cpu_s": {a: e.cpu_s for a, e in apps.items()},
        "idle_cpu_j": r.idle.cpu_joules,
        "unattributed_cpu_j": r.unattributed.cpu_joules,
        "own_ticks": own,
        "reaped_ticks": reaped,
        "other_cpu_s": {
            f"{p.name} ({p.app}, pid {p.pid})": p.cpu_s
            for p in r.processes
            if p.app not in KINDS and p.cpu_s > 0
        },
        "short_children_seen": sum(
            1 for p in r.processes if p.app == "short" and p.pid != pids["short"]
        ),
        "residual_j": r.total_joules
        - sum(p.joules for p in r.processes)
        - r.idle_joules
        - r.unattributed_joules,
        "residual_cpu_j": cpu_j
        - sum(p.cpu_joules for p in r.processes)
        - r.idle.cpu_joules
        - r.unattributed.cpu_joules,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    cc = None if args.no_codecarbon else import_codecarbon()
    if cc is None and not args.no_codecarbon:
        log(CODECARBON_MISSING)
    me = str(Path(__file__).resolve())
    children: list[Child] = []
    wrappers: dict[str, Child] = {}
    pids: dict[str, int] = {}
    cc_setup: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sci-accuracy-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            for kind in KINDS:
                if cc is not None:
                    argv = [sys.executable, me, "--cc-wrapper", kind, "process", str(args.interval)]
                    wrappers[kind] = Child(f"cc-{kind}", argv, tmp / f"cc-{kind}.log", cwd=tmp)
                else:
                    children.append(Child(kind, workload_argv(kind), tmp / f"{kind}.log"))
                    pids[kind] = children[-1].pid
            if cc is not None:
                argv = [sys.executable, me, "--cc-wrapper", "none", "machine", str(args.interval)]
                wrappers["machine"] = Child("cc-machine", argv, tmp / "cc-machine.log", cwd=tmp)
                log("CodeCarbon trackers: detecting hardware")
                for kind, w in wrappers.items():
                    cc_setup[kind] = w.expect("ready", 180)
                    if kind in KINDS:
                        pids[kind] = int(cc_setup[kind]["pid"])
            time.sleep(0.5)  # the workloads settle into their pattern
            for w in wrappers.values():
                w.send("go")  # the trackers start right before the agent's baseline
            for w in wrappers.values():
                w.expect("started", 60)
            wrapper_cpu0 = {k: cpu_clock_s(w.pid) for k, w in wrappers.items()}
            log(f"sampling every {args.interval:g} s for {args.seconds:g} s")
            figures = sample(args, pids)
            wrapper_cpu = {k: cpu_clock_s(w.pid) - wrapper_cpu0[k] for k, w in wrappers.items()}
            for w in wrappers.values():
                w.send("stop")
            cc_done = {k: w.expect("done", 60) for k, w in wrappers.items()}
        finally:
            for w in wrappers.values():
                w.close()
            for c in children:
                c.kill()
    figures["codecarbon"] = (
        {"setup": cc_setup, "done": cc_done, "wrapper_process_cpu_s": wrapper_cpu}
        if cc is not None
        else None
    )
    figures["codecarbon_skipped"] = "--no-codecarbon" if args.no_codecarbon else None
    return figures


def sample(args: argparse.Namespace, pids: dict[str, int]) -> dict[str, Any]:
    """The agent's run: ``open``, then one sample per interval, with the workloads' ticks."""
    sampler = make_sampler(args.interval)
    activities: list[CpuActivity] = []
    real: Callable[[], CpuActivity] = sampler.scanner.cpu_activity

    def capture() -> CpuActivity:
        activity = real()
        activities.append(activity)
        return activity

    setattr(sampler.scanner, "cpu_activity", capture)  # noqa: B010 - instance-level wrap
    records: list[dict[str, Any]] = []
    sampler.open()
    try:
        before = {k: stat_ticks(pid) for k, pid in pids.items()}
        t0 = time.monotonic()
        n = max(1, round(args.seconds / args.interval))
        for i in range(1, n + 1):
            time.sleep(max(0.0, t0 + i * args.interval - time.monotonic()))
            result = sampler.sample()
            after = {k: stat_ticks(pid) for k, pid in pids.items()}
            records.append(interval_record(result, activities[-1], before, after, pids))
            before = after
        elapsed = time.monotonic() - t0
        sensors = sampler.sensors
        model = sensors.details.get("model", "") if sensors is not None else ""
    finally:
        sampler.close()
    return {
        "machine": machine_info(),
        "interval_s": args.interval,
        "seconds": elapsed,
        "model": model,
        "pids": pids,
        "intervals": records,
        "summary": summarise(records),
    }


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    busy = sum(r["busy_ticks"] for r in records)
    active = sum(r["active_cpu_j"] for r in records)
    out: dict[str, Any] = {
        "busy_cpu_s": busy / CLK_TCK,
        "cpu_j": sum(r["cpu_j"] for r in records),
        "active_cpu_j": active,
        "idle_cpu_j": sum(r["idle_cpu_j"] for r in records),
        "unattributed_cpu_j": sum(r["unattributed_cpu_j"] for r in records),
        "measured_j": sum(r["measured_j"] for r in records),
        "residual_j": sum(r["residual_j"] for r in records),
        "residual_cpu_j": sum(r["residual_cpu_j"] for r in records),
        "max_abs_residual_j": max(abs(r["residual_j"]) for r in records),
        "short_children_seen": sum(r["short_children_seen"] for r in records),
        "workloads": {},
    }

    def expected(r: dict[str, Any], ticks: int) -> float:
        return r["active_cpu_j"] * ticks / r["busy_ticks"] if r["busy_ticks"] else 0.0

    for k in KINDS:
        own = sum(r["own_ticks"][k] for r in records)
        reaped = sum(r["reaped_ticks"][k] for r in records)
        got = sum(r["app_cpu_j"].get(k, 0.0) for r in records)
        exp = sum(expected(r, r["own_ticks"][k] + r["reaped_ticks"][k]) for r in records)
        out["workloads"][k] = {
            "own_cpu_s": own / CLK_TCK,
            "reaped_children_cpu_s": reaped / CLK_TCK,
            "measured_cpu_s": (own + reaped) / CLK_TCK,
            "measured_share_of_busy": (own + reaped) / busy if busy else 0.0,
            "agent_cpu_s": sum(r["app_cpu_s"].get(k, 0.0) for r in records),
            "attributed_cpu_j": got,
            "attributed_share_of_active": got / active if active else 0.0,
            "expected_cpu_j": exp,
            "attributed_over_expected": got / exp if exp else float("nan"),
            "expected_reaped_j": sum(expected(r, r["reaped_ticks"][k]) for r in records),
        }
    others: dict[str, float] = {}
    for r in records:
        for name, cpu_s in r["other_cpu_s"].items():
            others[name] = others.get(name, 0.0) + cpu_s
    out["top_other_cpu_s"] = dict(sorted(others.items(), key=lambda kv: -kv[1])[:5])
    every_app = sum(j for r in records for j in r["app_cpu_j"].values())
    out["attributed_cpu_j"] = every_app
    out["other_apps_cpu_j"] = every_app - sum(
        w["attributed_cpu_j"] for w in out["workloads"].values()
    )
    return out


# -- report ---------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def sections(f: dict[str, Any]) -> list[dict[str, Any]]:
    """What it measures, per workload, unattributed energy, conservation, CodeCarbon."""
    s, w = f["summary"], f["summary"]["workloads"]
    cc = f["codecarbon"]
    n = len(f["intervals"])
    setup = [
        f"agent: Sampler with the power model ({f['model']}), every {f['interval_s']:g} s, "
        f"{n} intervals over {f['seconds']:.1f} s; apps named by `[[apps]]` cmdline rules",
        "workloads: `full` busy loop; `quarter` busy 5 ms / asleep 15 ms; `short` forks a "
        "process every 100 ms that burns 20 ms of CPU and exits (reaped by the spawner)",
        f"truth: /proc/PID/stat of each workload at the agent's sampling instants; "
        f"machine busy CPU over the run {s['busy_cpu_s']:.2f} s; active CPU energy "
        f"(dynamic, above the static floor) {s['active_cpu_j']:.2f} J of {s['cpu_j']:.2f} J CPU "
        "(model)",
    ]
    if cc is None:
        setup.append(f"CodeCarbon: {f['codecarbon_skipped'] or CODECARBON_MISSING}")
    else:
        st = cc["setup"]["full"]
        setup.append(
            f"CodeCarbon {st['version']}: {', '.join(st['hardware'])}; CPU mode "
            f"`{st['cpu_mode']}`, TDP {st['tdp_w']} W over {st['cpu_count']} CPUs "
            "(its fallback: no RAPL here); one process-mode tracker per workload, in the "
            "workload's parent, plus one machine-mode tracker"
        )
    rows = []
    for k in KINDS:
        x = w[k]
        measured = f"{x['own_cpu_s']:.2f}"
        if x["reaped_children_cpu_s"]:
            measured += f" + {x['reaped_children_cpu_s']:.2f} reaped"
        rows.append(
            [
                f"`{k}`",
                measured,
                _pct(x["measured_share_of_busy"]),
                f"{x['agent_cpu_s']:.2f}",
                f"{x['attributed_cpu_j']:.2f}",
                f"{x['expected_cpu_j']:.2f}",
                _pct(x["attributed_share_of_active"]),
                f"**{x['attributed_over_expected']:.3f}**",
            ]
        )
    short = w["short"]
    unatt = s["unattributed_cpu_j"]
    reaped_j = short["expected_reaped_j"]
    unattributed = [
        f"unattributed CPU energy: **{unatt:.2f} J** "
        f"({_pct(unatt / s['active_cpu_j'] if s['active_cpu_j'] else 0)} of active); "
        f"expected energy of the reaped short-lived children (spawner's cutime + cstime): "
        f"**{reaped_j:.2f} J**, of which charged to `short`: see the table above",
        f"short-lived children caught alive by a scan: {s['short_children_seen']} of "
        f"~{round(f['seconds'] / 0.1)} spawned (their ticks went to `short`)",
        "how: a process that starts and ends between two scans is never in a scan; its "
        "CPU reaches the spawner's `cutime` when the spawner reaps it, and the agent "
        "charges a live parent the increase of its children's cutime + cstime (less what "
        "its vanished children were already charged while seen). What no live parent "
        "reaped (orphans reaped by init, the children of the interval's last moments not "
        f"yet reaped) stays `unattributed`. The spawner's own CPU: {short['own_cpu_s']:.2f} s.",
        "the rest of the unattributed energy: other processes that lived less than an "
        "interval (anything on the machine) and interrupt time",
        f"other apps (this process, the trackers, anything else running): "
        f"{s['other_apps_cpu_j']:.2f} J; most CPU-s: "
        + (", ".join(f"{n} {v:.2f}" for n, v in s["top_other_cpu_s"].items()) or "none"),
    ]
    conservation = [
        f"measured − attributed − idle − unattributed, summed over the run: "
        f"{s['residual_j']:.3e} J of {s['measured_j']:.2f} J measured (CPU alone: "
        f"{s['residual_cpu_j']:.3e} J); max |per interval| {s['max_abs_residual_j']:.3e} J",
        f"CPU: {s['cpu_j']:.2f} J = attributed {s['attributed_cpu_j']:.2f} + idle "
        f"{s['idle_cpu_j']:.2f} + unattributed {unatt:.2f}",
    ]
    out = [
        section("", ABOUT),
        section("", bullets(setup)),
        section(
            "Per workload",
            columns=[
                "workload",
                "measured CPU-s (own + reaped children)",
                "share of busy CPU",
                "CPU-s the agent saw",
                "attributed CPU J",
                "expected CPU J",
                "share of active CPU energy",
                "attributed ÷ expected",
            ],
            rows=rows,
        ),
        section("Unattributed energy and the short-lived processes", bullets(unattributed)),
        section("Conservation", bullets(conservation)),
    ]
    if cc is not None:
        out += codecarbon_section(f, cc)
    return out


def codecarbon_section(f: dict[str, Any], cc: dict[str, Any]) -> list[dict[str, Any]]:
    w, done = f["summary"]["workloads"], cc["done"]
    st = cc["setup"]["full"]
    per_cpu_w = (
        st["tdp_w"] / st["cpu_count"]
        if st["cpu_mode"] == "cpu_load" and st["tdp_w"] and st["cpu_count"]
        else None
    )
    measured_3 = sum(w[k]["measured_cpu_s"] for k in KINDS)
    agent_3 = sum(w[k]["attributed_cpu_j"] for k in KINDS)
    cc_3 = sum(done[k]["cpu_j"] for k in KINDS)
    seconds = f["seconds"]
    rows = []
    for k in KINDS:
        d = done[k]
        counted = d["cpu_j"] / per_cpu_w if per_cpu_w else float("nan")
        rows.append(
            [
                f"`{k}`",
                f"{w[k]['measured_cpu_s'] / seconds:.3f}",
                f"{counted / d['duration_s']:.3f}",
                f"{d['tracker_process_cpu_s'] / d['duration_s']:.3f}",
                f"{d['cpu_j']:.2f}",
                f"{d['ram_j']:.2f}",
                f"{d['duration_s']:.2f}",
                _pct(w[k]["measured_cpu_s"] / measured_3 if measured_3 else 0),
                _pct(w[k]["attributed_cpu_j"] / agent_3 if agent_3 else 0),
                _pct(d["cpu_j"] / cc_3 if cc_3 else 0),
            ]
        )
    m = done["machine"]
    notes = [
        f"machine-mode tracker over the same window: CPU {m['cpu_j']:.2f} J, RAM "
        f"{m['ram_j']:.2f} J in {m['duration_s']:.1f} s (the agent's model: CPU "
        f"{f['summary']['cpu_j']:.2f} J, all components {f['summary']['measured_j']:.2f} J); "
        "one figure for the whole machine, nothing per process",
        "process mode tracks the process that runs the tracker and its descendants, "
        "polled with psutil (`Process.children(recursive=True)`, `cpu_times()` user + "
        "system) every second and at each measurement. It cannot name or split anything "
        "else: one tracker per workload, in the workload's own process or its parent.",
        "a process first seen at a poll contributes 0 for that poll (its CPU before it "
        "was seen is lost), a process gone by the next poll loses its CPU since the last "
        "one, and reaped children's time (`children_user`, `children_system`) is not "
        "read: the short-lived processes vanish, and their energy goes nowhere (there is "
        "no unattributed bucket and no conservation against a machine total).",
        "its CPU power in process mode is TDP × (CPU-s of the tree ÷ seconds) ÷ CPUs, "
        "with no idle share; the tracker's own threads are counted in the workload's "
        "figure. RAM power is a DIMM-count model of the tree's RSS with a floor of "
        "2 DIMMs × 5 W = 10 W per tracker, whatever the process holds.",
        "with RAPL available, CodeCarbon's CPU energy comes from the package counters "
        "whatever the tracking mode, so each process-mode tracker reports the whole "
        "package's energy (read from its source: `tracking_mode` only changes the "
        "`cpu_load` estimate and RAM).",
    ]
    columns = [
        "workload",
        "measured CPU-s per s",
        "CPU-s per s CodeCarbon counted",
        "of which its tracker's process",
        "CodeCarbon CPU J",
        "CodeCarbon RAM J",
        "its duration (s)",
        "measured share (of the 3)",
        "sci-agent share (of the 3)",
        "CodeCarbon share (of the 3)",
    ]
    return [
        section('CodeCarbon, tracking_mode="process", beside the agent', "", columns, rows),
        section("", bullets(notes)),
    ]


# -- main -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of the run, s")
    p.add_argument("--interval", type=float, default=1.0, help="the agent's interval, s")
    p.add_argument("--no-codecarbon", action="store_true", help="leave CodeCarbon out")
    add_output_args(p)
    p.add_argument("--quick", action="store_true", help="a 5-second run")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = 5.0
    if args.seconds <= 0 or args.interval <= 0 or args.seconds < args.interval:
        p.error("--seconds and --interval must be > 0, --seconds ≥ --interval")
    return args


def main(argv: list[str]) -> int:
    if argv[:1] == ["--cc-wrapper"]:
        cc_wrapper(argv[1], argv[2], float(argv[3]))
        return 0
    args = parse_args(argv)
    figures = run(args)
    emit(args, figures, "bench_accuracy", TITLE, sections(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
