#!/usr/bin/env python3
"""Numbers a team can trust: SCI drift, process trees, units across SIGTERM, embodied g/h.

Four measurements on this machine, with the power model (no RAPL here):

1. **SCI drift.** A ``web`` workload does 4 ms of CPU per request, 50 requests/s, and
   writes one byte per request on its stdout (the benchmark counts them as units). A
   neighbour (a busy loop, another app) is off, then takes a core, then stops. Each
   phase's SCI of ``web`` is Σ carbon ÷ Σ units over its intervals, under each share
   policy (the same attributed intervals scored three times). Target: under the default
   policy the SCI with the busy neighbour is within ±5 % of the SCI without it.
2. **Process trees.** A ``tree`` workload forks, every 1.5 s, a child that forks a
   grandchild; both burn CPU and exit together (the child reaps the grandchild, the
   parent reaps the child). A ``bystander`` busy loop runs beside it. Truth is each one's
   own kernel accounting (``/proc/PID/stat``: utime + stime, + cutime + cstime of the
   parent once every round is reaped). Expected dynamic CPU energy = its CPU seconds ×
   the interval's dynamic joules per busy CPU-second. Targets: tree within ±3 %,
   bystander within ±2 %.
3. **Units across SIGTERM.** ``sci-agent run`` (5 s interval) receives units over HTTP
   for 6 s, then SIGTERM mid-interval. Units accepted (HTTP 2xx) against units in the
   store. Target: all. The app has no process, so this also checks units-only rows.
4. **Embodied carbon charged to this machine**, g per hour, from ``once --json``.

Writes ``bench/results/bench_trust.json`` and prints it as Markdown.
Run: ``python bench/bench_trust.py [--quick] [--json] [--results DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchutil import (
    CLK_TCK,
    ROOT,
    add_output_args,
    emit,
    kill_group,
    log,
    machine_info,
    model_config,
    section,
    stat_ticks,
)

from devtools.servers import free_port

if TYPE_CHECKING:
    from agent.config import Config, IdlePolicy
    from agent.records import IntensityValue, IntervalResult

TITLE = "Numbers a team can trust: SCI drift, process trees, units across SIGTERM"
ABOUT = (
    "Targets (trustworthy-numbers issue): an app with constant CPU per request keeps "
    "its SCI within ±5 % when a neighbour takes a core; a process tree whose children "
    "and grandchildren exit together is charged its CPU time within ±3 %, a busy "
    "bystander within ±2 %; every unit accepted before a SIGTERM is stored; the "
    "embodied carbon charged to this machine per hour."
)
MARKER = "sci-bench-trust"
POLICIES: tuple[IdlePolicy, ...] = ("capacity", "full", "proportional", "separate")

WORKLOAD = r"""
import os, sys, time
kind = sys.argv[1]
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
if kind == "web":
    out = sys.stdout.buffer
    tick = time.monotonic()
    while True:
        burn(0.004)
        out.write(b"r")
        out.flush()
        tick += 0.020
        rest = tick - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        else:
            tick = time.monotonic()
elif kind == "busy":
    while True:
        pass
elif kind == "tree":
    rounds = int(sys.argv[3])
    sys.stdin.readline()  # "go": the benchmark has read the baseline
    for _ in range(rounds):
        started = time.monotonic()
        child = os.fork()
        if child == 0:
            grandchild = os.fork()
            if grandchild == 0:
                burn(0.5)
                os._exit(0)
            burn(0.3)
            os.waitpid(grandchild, 0)
            os._exit(0)
        os.waitpid(child, 0)
        time.sleep(max(0.0, 1.5 - (time.monotonic() - started)))
    sys.stdout.write("done\n")
    sys.stdout.flush()
    sys.stdin.readline()
"""


def spawn(kind: str, *extra: str, **popen: Any) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-S", "-c", WORKLOAD, kind, f"{MARKER}={kind}", *extra]
    return subprocess.Popen(argv, start_new_session=True, **popen)


def stop(proc: subprocess.Popen[bytes]) -> None:
    kill_group(proc.pid)
    proc.wait()


def base_config(interval: float) -> Config:
    """The power model only, workloads named by their command-line markers."""
    from agent.config import AppRule

    kinds = ("web", "busy", "tree", "bystander")
    apps = tuple(
        AppRule(k, cmdline=rf"{MARKER}={k}\b", unit="request" if k == "web" else None)
        for k in kinds
    )
    return model_config(interval_s=interval, apps=apps)


def fixed_intensity() -> IntensityValue:
    from agent.records import IntensityValue, utc_now

    return IntensityValue("bench", 100.0, "static", "average", utc_now())


def dynamic_rate(result: IntervalResult, busy_ticks: int) -> float:
    """Dynamic CPU joules per busy CPU-second in this interval."""
    # (an agent from before the static/dynamic split has no floor: all of it is dynamic)
    cpu = [c for c in result.components if c.kind == "cpu"]
    dynamic = sum(getattr(c, "dynamic_joules", c.joules) for c in cpu)
    return dynamic / (busy_ticks / CLK_TCK) if busy_ticks > 0 else 0.0


# -- 1. SCI drift ---------------------------------------------------------------------


def drift(interval: float, phase_s: float) -> dict[str, Any]:
    from agent.config import ConfigError, validate
    from agent.runtime import Agent

    cfg = base_config(interval)
    agent = Agent(cfg, serve_http=False)
    scorers = {}
    for p in POLICIES:  # a policy this version does not know is left out
        with contextlib.suppress(ConfigError):
            policy_cfg = validate(replace(cfg, sci=replace(cfg.sci, idle_policy=p)))
            scorers[p] = Agent(policy_cfg, serve_http=False).scorer
    web = spawn("web", stdout=subprocess.PIPE)
    requests = [0]

    def count() -> None:
        assert web.stdout is not None
        while chunk := web.stdout.read1(4096):  # type: ignore[attr-defined]
            requests[0] += len(chunk)

    threading.Thread(target=count, daemon=True).start()
    neighbour: subprocess.Popen[bytes] | None = None
    phases: dict[str, dict[IdlePolicy, dict[str, float]]] = {}
    intensity = fixed_intensity()
    try:
        time.sleep(1.0)
        agent.sampler.open()
        taken = requests[0]
        for phase in ("alone", "neighbour busy", "alone again"):
            if phase == "neighbour busy":
                neighbour = spawn("busy")
            elif neighbour is not None:
                stop(neighbour)
                neighbour = None
            time.sleep(interval)  # let the phase settle; this interval is not counted
            agent.sampler.sample()
            taken = requests[0]
            sums = {p: {"carbon_g": 0.0, "units": 0.0, "cpu_s": 0.0} for p in scorers}
            for _ in range(max(1, round(phase_s / interval))):
                time.sleep(interval)
                result = agent.sampler.sample()
                now = requests[0]
                units = {"web": float(now - taken)}
                taken = now
                for p, scorer in scorers.items():
                    scored = scorer.score(result, intensity, units)
                    row = next((s for s in scored.sci if s.app == "web"), None)
                    if row is not None:
                        sums[p]["carbon_g"] += row.carbon_g
                        sums[p]["units"] += row.units
                web_app = next((a for a in result.apps if a.app == "web"), None)
                for p in scorers:
                    sums[p]["cpu_s"] += web_app.cpu_s if web_app else 0.0
            phases[phase] = sums
    finally:
        if neighbour is not None:
            stop(neighbour)
        stop(web)
        agent.sampler.close()
    out: dict[str, Any] = {"phases": phases, "policies": {}, "default": cfg.sci.idle_policy}
    for p in scorers:
        sci = {
            ph: (v[p]["carbon_g"] / v[p]["units"] if v[p]["units"] else float("nan"))
            for ph, v in phases.items()
        }
        out["policies"][p] = {
            "sci_g": sci,
            "drift_pct": 100.0 * (sci["neighbour busy"] / sci["alone"] - 1.0),
            "cpu_ms_per_request": {
                ph: 1000.0 * v[p]["cpu_s"] / v[p]["units"] if v[p]["units"] else float("nan")
                for ph, v in phases.items()
            },
        }
    return out


# -- 2. process trees -----------------------------------------------------------------


def trees(interval: float, rounds: int) -> dict[str, Any]:
    from agent.sampler import Sampler

    sampler = Sampler(base_config(interval))
    busy_ticks: list[int] = []
    real = sampler.scanner.cpu_activity

    def capture() -> Any:
        activity = real()
        busy_ticks.append(activity.busy_ticks)
        return activity

    setattr(sampler.scanner, "cpu_activity", capture)  # noqa: B010 - instance-level wrap
    tree = spawn("tree", str(rounds), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    bystander = spawn("busy")  # app "busy": a bystander taking a whole core
    attributed = {"tree": 0.0, "bystander": 0.0, "unattributed": 0.0}
    expected_rate_j = {"tree": 0.0, "bystander": 0.0}
    clamped = 0
    try:
        time.sleep(0.5)
        sampler.open()
        t0 = {"tree": stat_ticks(tree.pid), "bystander": stat_ticks(bystander.pid)}
        assert tree.stdin is not None and tree.stdout is not None
        tree.stdin.write(b"go\n")
        tree.stdin.flush()
        done = False
        last = {"bystander": t0["bystander"]}
        while not done:
            time.sleep(interval)
            done = tree.poll() is not None or _ready(tree.stdout)
            result = sampler.sample()
            rate = dynamic_rate(result, busy_ticks[-1])
            clamped += getattr(result, "clamped_ticks", 0)
            apps = {a.app: a for a in result.apps}
            attributed["tree"] += apps["tree"].cpu_joules if "tree" in apps else 0.0
            attributed["bystander"] += apps["busy"].cpu_joules if "busy" in apps else 0.0
            attributed["unattributed"] += result.unattributed.cpu_joules
            now = stat_ticks(bystander.pid)
            ticks = sum(now[:2]) - sum(last["bystander"][:2])
            expected_rate_j["bystander"] += ticks / CLK_TCK * rate
            last["bystander"] = now
        t1 = {"tree": stat_ticks(tree.pid), "bystander": stat_ticks(bystander.pid)}
    finally:
        with contextlib.suppress(Exception):
            if tree.stdin is not None:
                tree.stdin.close()
        stop(tree)
        stop(bystander)
        sampler.close()
    tree_cpu_s = (sum(t1["tree"]) - sum(t0["tree"])) / CLK_TCK
    by_cpu_s = (sum(t1["bystander"][:2]) - sum(t0["bystander"][:2])) / CLK_TCK
    rate_avg = expected_rate_j["bystander"] / by_cpu_s if by_cpu_s else 0.0
    expected_tree = tree_cpu_s * rate_avg
    return {
        "rounds": rounds,
        "tree_cpu_s": tree_cpu_s,
        "bystander_cpu_s": by_cpu_s,
        "dynamic_j_per_cpu_s": rate_avg,
        "tree_attributed_j": attributed["tree"],
        "tree_expected_j": expected_tree,
        "tree_ratio": attributed["tree"] / expected_tree if expected_tree else float("nan"),
        "bystander_attributed_j": attributed["bystander"],
        "bystander_expected_j": expected_rate_j["bystander"],
        "bystander_ratio": attributed["bystander"] / expected_rate_j["bystander"]
        if expected_rate_j["bystander"]
        else float("nan"),
        "unattributed_cpu_j": attributed["unattributed"],
        "clamped_ticks": clamped,
    }


def _ready(stream: Any) -> bool:
    import select

    ready, _, _ = select.select([stream], [], [], 0)
    return bool(ready) and stream.readline().strip() == b"done"


# -- 3. units across SIGTERM ----------------------------------------------------------


def units_across_sigterm(push_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sci-trust-") as tmp:
        port = free_port()
        db = Path(tmp) / "store.db"
        cfg = Path(tmp) / "agent.toml"
        cfg.write_text(
            "interval_s = 5\n"
            f'[store]\npath = "{db}"\n'
            f'[http]\nlisten = "127.0.0.1:{port}"\n'
            "[sensors.rapl]\nenabled = false\n[sensors.nvml]\nenabled = false\n"
            '[[apps]]\nname = "web"\ncmdline = "no-process-matches-this-rule"\nunit = "request"\n'
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(cfg), "run"],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, 30)
            accepted = sent = 0
            body = json.dumps({"app": "web", "unit": "request", "count": 1}).encode()
            end = time.monotonic() + push_s
            while time.monotonic() < end:
                sent += 1
                req = urllib.request.Request(
                    base + "/v1/units", body, {"Content-Type": "application/json"}
                )
                with contextlib.suppress(OSError), urllib.request.urlopen(req, timeout=5) as r:
                    accepted += 200 <= r.status < 300
                time.sleep(0.08)
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(timeout=60)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        with sqlite3.connect(db) as con:
            stored = con.execute("SELECT COALESCE(SUM(units), 0) FROM sci WHERE app='web'")
            stored_units = float(stored.fetchone()[0])
        return {"sent": sent, "accepted": accepted, "stored": stored_units, "exit_code": code}


def _wait_healthy(base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(base + "/healthz", timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError("the agent's endpoint did not come up")


# -- 4. embodied g/h ------------------------------------------------------------------


def embodied_per_hour(interval: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sci-trust-") as tmp:
        cfg = Path(tmp) / "agent.toml"
        cfg.write_text("[store]\nenabled = false\n[http]\nenabled = false\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "--config",
                str(cfg),
                "once",
                "--json",
                "--interval",
                str(interval),
            ],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    data = json.loads(out.stdout)
    grams = data.get("embodied_g")
    if grams is None:
        grams = sum(s["embodied_g"] for s in data["sci"])
    method = data.get("method") or {}
    return {
        "interval_s": data["interval_s"],
        "embodied_g": grams,
        "g_per_hour": grams * 3600.0 / data["interval_s"],
        "embodied_kgco2e": method.get("embodied_kgco2e"),
        "basis": method.get("embodied_basis", ""),
    }


# -- report ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    interval = 1.0
    log("1/4 SCI drift")
    d = drift(interval, 4.0 if args.quick else 10.0)
    log("2/4 process trees")
    t = trees(interval, 5 if args.quick else 12)
    log("3/4 units across SIGTERM")
    u = units_across_sigterm(6.0)
    log("4/4 embodied g/h")
    e = embodied_per_hour(2.0)
    return {
        "machine": machine_info(),
        "drift": d,
        "trees": t,
        "units": u,
        "embodied": e,
    }


def targets(f: dict[str, Any]) -> dict[str, bool]:
    return {
        "drift": abs(f["drift"]["policies"][f["drift"]["default"]]["drift_pct"]) <= 5.0,
        "tree": abs(f["trees"]["tree_ratio"] - 1.0) <= 0.03,
        "bystander": abs(f["trees"]["bystander_ratio"] - 1.0) <= 0.02,
        "units": f["units"]["stored"] == f["units"]["accepted"],
    }


def sections(f: dict[str, Any]) -> list[dict[str, Any]]:
    """What it measures, then the four measurements, each with its target."""
    ok = targets(f)
    mark = {True: "met", False: "MISSED"}
    d = f["drift"]
    rows = []
    for p, v in d["policies"].items():
        rows.append(
            [
                p + (" (default)" if p == d["default"] else ""),
                *(f"{v['sci_g'][ph]:.3e}" for ph in ("alone", "neighbour busy", "alone again")),
                f"{v['drift_pct']:+.1f} %",
            ]
        )
    cpu = d["policies"][d["default"]]["cpu_ms_per_request"]
    t = f["trees"]
    tree_rows = [
        [
            "tree",
            f"{t['tree_cpu_s']:.2f}",
            f"{t['tree_expected_j']:.2f}",
            f"{t['tree_attributed_j']:.2f}",
            f"{t['tree_ratio']:.3f}",
            f"±3 % {mark[ok['tree']]}",
        ],
        [
            "bystander",
            f"{t['bystander_cpu_s']:.2f}",
            f"{t['bystander_expected_j']:.2f}",
            f"{t['bystander_attributed_j']:.2f}",
            f"{t['bystander_ratio']:.3f}",
            f"±2 % {mark[ok['bystander']]}",
        ],
    ]
    u, e = f["units"], f["embodied"]
    embodied = (
        f"Embodied carbon charged to this machine: {e['g_per_hour']:.2f} g/h "
        f"({e['embodied_g']:.4f} g over {e['interval_s']:.2f} s)"
        + (f"; TE {e['embodied_kgco2e']:g} kgCO2e: {e['basis']}" if e["basis"] else "")
        + "."
    )
    return [
        section("", ABOUT),
        section(
            "SCI drift",
            "SCI of `web` (4 ms CPU per request, 50 requests/s), g per request:",
            ["policy", "alone", "neighbour busy", "alone again", "drift"],
            rows,
        ),
        section(
            "",
            f"CPU per request by the agent's accounting: {cpu['alone']:.2f} / "
            f"{cpu['neighbour busy']:.2f} / {cpu['alone again']:.2f} ms. "
            f"Target ±5 % under the default policy: {mark[ok['drift']]}.",
        ),
        section(
            "Process trees",
            f"Process tree ({t['rounds']} rounds of a child + grandchild exiting together) "
            f"beside a busy bystander; dynamic rate {t['dynamic_j_per_cpu_s']:.3f} J per CPU-s:",
            ["workload", "CPU s (kernel)", "expected J", "attributed J", "ratio", "target"],
            tree_rows,
        ),
        section(
            "",
            f"Unattributed CPU energy over the run: {t['unattributed_cpu_j']:.2f} J; reaped "
            f"ticks clamped (already counted by /proc/stat in an earlier interval): "
            f"{t['clamped_ticks']}.",
        ),
        section(
            "Units across SIGTERM",
            f"Units across SIGTERM: {u['sent']} sent, {u['accepted']} accepted (2xx), "
            f"{u['stored']:g} in the store; exit status {u['exit_code']}. Target all: "
            f"{mark[ok['units']]}.",
        ),
        section("Embodied carbon", embodied),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short phases")
    add_output_args(parser)
    args = parser.parse_args(argv)
    figures = run(args)
    emit(args, figures, "bench_trust", TITLE, sections(figures))
    return 0 if all(targets(figures).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
