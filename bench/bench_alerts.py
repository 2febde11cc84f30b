"""What alerting costs the agent: the loop's share, an evaluation, memory, latency.

- ``write``: what the sampling loop pays per interval to hand it to the alert engine
  (reduce it to a few numbers per app, append, wake the thread), 20 apps.
- ``evaluate``: one evaluation of 10 rules (host and app power, SCI, staleness, a
  7-day SCI change) over a full one-day window of 5 s intervals, on the engine's thread.
- the 7-day baseline query against a store holding 7 days of 5 s intervals for 5 apps
  (it runs at most every 10 minutes per window length).
- memory held by a one-day window (17,280 intervals, 20 apps), by ``tracemalloc``.
- latency from the evaluation that fires to a real loopback receiver holding the
  signed request, through the persistent outbox and a delivery thread.

Writes ``bench/results/bench_alerts.json`` and prints it as Markdown.
Usage: ``python bench/bench_alerts.py [--quick] [--json] [--results DIR]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchutil import add_output_args, emit, machine_info, percentile, section

from agent.alerts.baseline import SciBaseline
from agent.alerts.config import AlertRuleConfig, AlertsConfig, WebhookConfig
from agent.alerts.delivery import Deliverer
from agent.alerts.engine import AlertEngine, Health
from agent.alerts.outbox import Outbox
from agent.alerts.window import AppTotals, IntervalSummary, MetricWindow
from agent.records import (
    AppEnergy,
    ComponentReading,
    IntensityValue,
    IntervalResult,
    SciRecord,
)

TITLE = "Alert engine cost"
ABOUT = (
    "What alerting adds to the agent: the sampling loop's share per interval (the "
    "engine evaluates on its own thread), one evaluation of 10 rules over a day of "
    "5 s intervals, the 7-day SCI baseline query, the memory of the windows, and the "
    "time from a firing evaluation to a signed request at a real receiver."
)
APPS = [f"app{i:02d}" for i in range(20)]
DAY_INTERVALS = 17_280  # one day of 5 s intervals
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def result(end: datetime, seconds: float = 5.0) -> IntervalResult:
    """An interval with 20 apps, each with SCI terms (what the loop hands the engine)."""
    apps = tuple(AppEnergy(a, 1.0 + i, 0.1, 0.0, 0.5) for i, a in enumerate(APPS))
    idle = AppEnergy("_idle", 5.0, 0.5, 0.0)
    sci = tuple(SciRecord(a, "request", 10.0, 1e-6, 50.0, 5e-5, 1e-5, 6e-6) for a in APPS)
    grid = IntensityValue("FR", 50.0, "builtin", "average", end)
    return IntervalResult(
        "bench",
        end - timedelta(seconds=seconds),
        end,
        (ComponentReading("cpu", "cpu", "model", 60.0),),
        (),
        apps,
        idle,
        idle,
        intensity=grid,
        sci=sci,
    )


def summary(end: float) -> IntervalSummary:
    apps = {a: AppTotals(2.0, 6e-5, 10.0, "request") for a in APPS}
    return IntervalSummary(end, 5.0, 60.0, 50.0, apps)


def rules() -> tuple[AlertRuleConfig, ...]:
    day = 86_400.0
    return (
        AlertRuleConfig("host", "host_watts", 500.0, window_s=300.0),
        AlertRuleConfig("host-day", "host_watts", 500.0, window_s=day),
        AlertRuleConfig("apps", "app_watts", 100.0, window_s=300.0),
        AlertRuleConfig("apps-hour", "app_watts", 100.0, window_s=3600.0),
        AlertRuleConfig("sci", "sci", 1.0, window_s=300.0),
        AlertRuleConfig("sci-day", "sci", 1.0, window_s=day),
        AlertRuleConfig("change", "sci_change_pct", 20.0, window_s=3600.0),
        AlertRuleConfig("grid", "gco2_per_kwh", 400.0, window_s=3600.0),
        AlertRuleConfig("stale", "staleness_s", 300.0),
        AlertRuleConfig("spool", "spool_bytes", 1e8),
    )


class NullOutbox:
    def put(self, n: object, supersede: bool = False) -> None:
        pass


def bench_write(n: int, tmp: Path) -> dict[str, float]:
    cfg = AlertsConfig(state_dir=str(tmp), rules=rules())
    engine = AlertEngine(cfg, "bench", outbox=NullOutbox(), interval_s=5.0)
    start = datetime(2026, 11, 30, tzinfo=UTC)
    batch = [result(start + timedelta(seconds=5 * k)) for k in range(n)]
    times = []
    for r in batch:
        began = time.perf_counter()
        engine.write([r])
        times.append(time.perf_counter() - began)
    return {
        "median_us": statistics.median(times) * 1e6,
        "p99_us": percentile(times, 99) * 1e6,
    }


def store_week(path: Path, apps: int, intervals: int, end_ms: int) -> None:
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE sci (host TEXT NOT NULL, app TEXT NOT NULL, unit TEXT,"
        " ts_ms INTEGER NOT NULL, interval_s REAL NOT NULL, energy_kwh REAL NOT NULL,"
        " intensity REAL NOT NULL,"
        " operational_g REAL NOT NULL, embodied_g REAL NOT NULL, units REAL NOT NULL, sci REAL,"
        " PRIMARY KEY (host, app, ts_ms)) WITHOUT ROWID"
    )
    db.execute("CREATE INDEX sci_ts ON sci (ts_ms)")
    rows = (
        ("bench", APPS[a], "request", end_ms - k * 5000, 5.0, 1e-6, 50.0, 5e-5, 1e-5, 10.0, 6e-6)
        for k in range(intervals)
        for a in range(apps)
    )
    db.executemany("INSERT INTO sci VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def bench_evaluate(tmp: Path, intervals: int, repeats: int) -> dict[str, float]:
    now = time.time()
    store = tmp / "store.db"
    store_week(store, 5, intervals * 7, int(now * 1000))
    baseline = SciBaseline(store, "bench")
    began = time.perf_counter()
    baseline._query(3600.0, now)
    query_ms = (time.perf_counter() - began) * 1000
    cfg = AlertsConfig(state_dir=str(tmp), rules=rules())
    worked = {"cycle": now, "sensor:model": now, "sink:store": now}
    engine = AlertEngine(
        cfg,
        "bench",
        outbox=NullOutbox(),
        baseline=baseline,
        interval_s=5.0,
        health=Health(last_worked=lambda: worked),
    )
    engine.window.add(summary(now - 5.0 * k) for k in reversed(range(intervals)))
    engine.evaluate(now)  # the baseline cached, as between its 10-minute refreshes
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        engine.evaluate(now)
        times.append(time.perf_counter() - began)
    return {
        "evaluate_ms": statistics.median(times) * 1000,
        "baseline_query_ms": query_ms,
        "baseline_rows": 5 * intervals * 7,
        "scopes": len(engine.statuses),
    }


def bench_memory(intervals: int) -> dict[str, float]:
    """What the windows of ``rules()`` hold after ``intervals`` intervals of 20 apps."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    window = MetricWindow({r.window_s for r in rules()}, 5.0)
    now = time.time()
    window.add(summary(now - 5.0 * k) for k in reversed(range(intervals)))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"mb": held / 1e6, "buckets": window.buckets()}


def bench_latency(tmp: Path, repeats: int) -> dict[str, float]:
    arrived: list[float] = []
    got = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrived.append(time.perf_counter())
            self.send_response(204)
            self.end_headers()
            got.set()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    hook = WebhookConfig("team", url, secret=SECRET)
    rule = AlertRuleConfig(
        "power", "host_watts", 100.0, window_s=0.5, keep_firing_for_s=0.0, webhooks=("team",)
    )
    cfg = AlertsConfig(state_dir=str(tmp / "lat"), rules=(rule,), webhooks=(hook,))
    outbox = Outbox(tmp / "lat-outbox.db")
    deliverer = Deliverer(outbox, cfg.webhooks, cfg.max_age_s)
    engine = AlertEngine(cfg, "bench", outbox=outbox, wake_delivery=deliverer.wake, interval_s=5.0)
    deliverer.start()
    latencies = []
    try:
        for k in range(repeats):
            watts = 200.0 if k % 2 == 0 else 10.0  # fire, resolve, fire…
            t = time.time()
            engine.window.add([IntervalSummary(t, 10.0, watts * 10.0, None, {})])
            got.clear()
            began = time.perf_counter()
            made = engine.evaluate(t)
            assert made, "every step fires or resolves"
            if not got.wait(10):
                raise RuntimeError("the receiver got nothing in 10 s")
            latencies.append(arrived[-1] - began)
            time.sleep(0.6)  # the next step's window holds only its own interval
    finally:
        deliverer.stop(1.0)
        outbox.close()
        server.shutdown()
    return {"median_ms": statistics.median(latencies) * 1000, "max_ms": max(latencies) * 1000}


def run(quick: bool) -> dict[str, Any]:
    intervals = 2_000 if quick else DAY_INTERVALS
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        return {
            "machine": machine_info(),
            "window_intervals": intervals,
            "write": bench_write(500 if quick else 5_000, tmp),
            "evaluate": bench_evaluate(tmp, intervals, 5 if quick else 20),
            "window": bench_memory(intervals),
            "latency": bench_latency(tmp, 10 if quick else 40),
        }


def sections(f: dict[str, Any]) -> list[dict[str, Any]]:
    w, e, lat = f["write"], f["evaluate"], f["latency"]
    days = f["window_intervals"] / DAY_INTERVALS
    rows = [
        [
            "loop's cost per interval (`write`, 20 apps)",
            f"{w['median_us']:.0f} µs median, {w['p99_us']:.0f} µs p99",
        ],
        [
            f"one evaluation: 10 rules, {e['scopes']} alerts, a {days:.2g}-day window of 5 s"
            " intervals (engine thread)",
            f"{e['evaluate_ms']:.1f} ms",
        ],
        [
            f"7-day SCI baseline query ({e['baseline_rows']:,} store rows; at most every 10 min)",
            f"{e['baseline_query_ms']:.0f} ms",
        ],
        [
            f"memory of the 10 rules' windows after {f['window_intervals']:,} intervals of"
            f" 20 apps ({f['window']['buckets']} buckets)",
            f"{f['window']['mb']:.2f} MB",
        ],
        [
            "firing evaluation → signed request at a loopback receiver (outbox, delivery thread)",
            f"{lat['median_ms']:.1f} ms median, {lat['max_ms']:.1f} ms max",
        ],
    ]
    return [
        section("", ABOUT),
        section("Cost", columns=["what", "figure"], rows=rows),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller window and fewer runs")
    add_output_args(parser)
    args = parser.parse_args(argv)
    figures = run(args.quick)
    emit(args, figures, "bench_alerts", TITLE, sections(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
