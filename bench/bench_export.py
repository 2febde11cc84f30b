#!/usr/bin/env python3
"""Benchmark the InfluxDB export path against a real influxd 1.x started for the run.

Three sets of figures, all measured on this machine:

1. Points per second: (a) serialisation alone (``interval_points`` then
   ``Point.to_line``) of realistic synthetic intervals (1 host, 4 RAPL components,
   10 apps of 6 processes each, top 20 process groups + ``_other``, SCI rows, grid
   intensity), built with ``agent.attribution.attribute`` and ``agent.scoring.Scorer``;
   (b) end to end: N intervals' lines appended to a ``Spool``, then the agent's own
   ``SpoolRunner`` + ``InfluxV1Sink`` (built by ``build_influx_sink``, default
   settings) drains it to influxd; timed from ``start`` until ``pending_lines() == 0``,
   with gzip on and off, and the points counted back on the server.
2. The sampling cycle (``Sampler.sample`` → ``Scorer.score`` → ``SpooledSink.write``)
   run back to back with no InfluxDB sink, with influxd live (sender idle, and sender
   draining a backlog), paused with SIGSTOP (the sender is stuck in a request that can
   only time out) and stopped (connection refused): ``write()`` must return at once
   whatever the server does.
3. Spool size per hour of outage at the default interval and settings, how long the
   default spool lasts, and points and series per host over a simulated day.

influxd (``/usr/bin/influxd``) runs on loopback with auth, in a temporary directory,
via ``devtools/servers.py`` (the tests' servers); it is always stopped at the end, on
SIGTERM, SIGHUP and Ctrl-C too. The benchmark's own data is frozen out of the garbage
collector (``gc.freeze``) before any timing, so that its size does not pose as pauses.

Writes ``bench/results/bench_export.json`` and prints it as Markdown.
Run: ``python bench/bench_export.py [--json] [--results DIR] [--quick] [--cycles K] [--seed N]``
(full mode: about half a minute on 2 CPUs; ``--quick``: a few seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import logging
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from benchutil import (
    add_output_args,
    bullets,
    count_pids,
    cpu_seconds,
    emit,
    find_pid,
    load_average,
    log,
    machine_info,
    model_config,
    section,
    stats,
)

from agent.attribution import attribute
from agent.config import Config, InfluxConfig, SpoolConfig
from agent.embodied import host_embodied
from agent.procfs import CLK_TCK
from agent.records import (
    ComponentReading,
    CpuActivity,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
)
from agent.sampler import Sampler
from agent.scoring import Scorer
from agent.units import app_units
from devtools.servers import InfluxdServer, find_binary
from exporters.delivery import NetworkSink
from exporters.influx_sink import MIB, build_influx_sink
from exporters.points import Point, interval_points
from exporters.spool import Spool
from exporters.spooled import SpooledSink

TITLE = "Export to InfluxDB"
ABOUT = (
    "Points serialised and shipped per second to a real influxd; the sampling "
    "cycle with InfluxDB live, stopped and hung; spool growth per hour of outage; "
    "fleet sizing."
)

DEFAULTS = Config()
INTERVAL_S = DEFAULTS.interval_s  # 5 s
TOP_N = DEFAULTS.influxdb.top_processes  # 20
BATCH_SIZE = DEFAULTS.influxdb.batch_size  # 5000
SPOOL_MAX_BYTES = int(DEFAULTS.spool.max_mb * MIB)  # 256 MiB
SECONDS_PER_DAY = 86400
INTERVALS_PER_HOUR = round(3600 / INTERVAL_S)
INTERVALS_PER_DAY = round(SECONDS_PER_DAY / INTERVAL_S)

# The synthetic host: 10 apps × 3 process names × 2 processes = 60 processes, 30 groups.
HOST = "bench-host-01"
CPUS = 16
MEMORY_BYTES = 64 << 30
PROCESSES_PER_NAME = 2
APP_PROCESSES: dict[str, tuple[str, ...]] = {
    "web": ("nginx", "gunicorn", "node"),
    "api": ("uvicorn", "envoy", "celery"),
    "db": ("postgres", "pgbouncer", "postgres_exporter"),
    "cache": ("redis-server", "memcached", "redis-sentinel"),
    "queue": ("beam.smp", "epmd", "erl_child_setup"),
    "worker": ("python3", "ffmpeg", "convert"),
    "ml": ("torchserve", "java", "tritonserver"),
    "search": ("opensearch", "logstash", "fluent-bit"),
    "etl": ("spark-submit", "airflow", "dbt"),
    "monitor": ("prometheus", "node_exporter", "grafana"),
}
APP_UNITS = {"web": "request", "api": "request", "ml": "inference", "search": "query", "etl": "job"}
BUSY_SHARE = 0.35  # of all CPUs, on average
LOAD_NOISE = 0.35  # sigma of each process's log-normal load per interval

POLL_S = 0.001
DRAIN_TIMEOUT_S = 120.0
MEASUREMENTS = (  # a field every point of the measurement has, to count them back
    ("host_energy", "joules"),
    ("app_energy", "total_j"),
    ("process_energy", "joules"),
    ("grid_intensity", "gco2_per_kwh"),
    ("sci", "energy_kwh"),
)


# -- synthetic intervals ----------------------------------------------------------------


class SyntheticHost:
    """A host with a stable set of apps and processes whose loads vary per interval.

    Each (app, process name) group has a fixed Zipf-like weight; every interval each
    process's CPU ticks are that weight × a log-normal factor, so the groups near
    rank 20 change places from time to time, as on a real server.
    """

    def __init__(self, seed: int, t0: datetime) -> None:
        self.rng = random.Random(seed)
        self.t0 = t0
        groups = [(app, name) for app, names in APP_PROCESSES.items() for name in names]
        ranks = list(range(len(groups)))
        self.rng.shuffle(ranks)
        weights = [1.0 / (r + 1) ** 1.1 for r in ranks]
        total_w = sum(weights)
        self.total_ticks = round(INTERVAL_S * CLK_TCK * CPUS)
        budget = BUSY_SHARE * self.total_ticks
        pid = 1000
        self.procs: list[tuple[int, str, str, float, int]] = []  # pid, name, app, ticks, rss
        for (app, name), w in zip(groups, weights, strict=True):
            for _ in range(PROCESSES_PER_NAME):
                pid += self.rng.randint(1, 40)
                rss = self.rng.randint(20, 2000) << 20
                self.procs.append((pid, name, app, budget * w / total_w / PROCESSES_PER_NAME, rss))
        self.scorer = Scorer(
            APP_UNITS,
            host_embodied(DEFAULTS, CPUS).kgco2e,
            DEFAULTS.embodied.lifespan_years,
            DEFAULTS.sci.idle_policy,
            DEFAULTS.sci.pue,
            cpu_count=CPUS,
        )

    def interval(self, i: int) -> IntervalResult:
        """Interval ``i`` (0-based) after ``t0``, attributed and scored."""
        rng = self.rng
        start = self.t0 + timedelta(seconds=i * INTERVAL_S)
        end = start + timedelta(seconds=INTERVAL_S)
        procs = [
            ProcessActivity(
                pid,
                1_000 + pid,
                name,
                app,
                max(0, round(ticks * rng.lognormvariate(0.0, LOAD_NOISE))),
                rss + rng.randint(-1 << 20, 1 << 20),
            )
            for pid, name, app, ticks, rss in self.procs
        ]
        unaccounted = round(0.02 * self.total_ticks * rng.random())
        busy = min(self.total_ticks, sum(p.cpu_ticks for p in procs) + unaccounted)
        f = busy / self.total_ticks
        package_busy = {0: min(1.0, f * 1.1), 1: f * 0.9}
        cpu = CpuActivity(busy, self.total_ticks, CPUS, package_busy)
        readings = [
            ComponentReading("cpu0", "cpu", "rapl", INTERVAL_S * (30 + 90 * package_busy[0])),
            ComponentReading("cpu1", "cpu", "rapl", INTERVAL_S * (30 + 90 * package_busy[1])),
            ComponentReading("dram0", "dram", "rapl", INTERVAL_S * (4 + 6 * f)),
            ComponentReading("dram1", "dram", "rapl", INTERVAL_S * (4 + 6 * f)),
        ]
        result = attribute(HOST, start, end, readings, cpu, procs, MEMORY_BYTES)
        intensity = IntensityValue("FR", rng.uniform(40, 70), "builtin", "average", end)
        units = {
            "web": float(rng.randint(2000, 3000)),
            "api": float(rng.randint(500, 900)),
            "ml": float(rng.randint(10, 60)),
            "search": float(rng.randint(50, 150)),
            "etl": float(rng.random() < 0.2),  # often 0: an undefined SCI, no "sci" field
        }
        return self.scorer.score(result, intensity, units)


def series_key(p: Point) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Measurement + tag set, as the server keys a series (empty tags are not written)."""
    return p.measurement, tuple(sorted((k, v) for k, v in p.tags if v != ""))


def payload(lines: Sequence[str]) -> bytes:
    """The request body ``InfluxV1Sink.send`` posts, before compression."""
    return "\n".join(lines).encode("utf-8")


@dataclass
class Simulation:
    """A simulated span of one host: what sizing needs, plus intervals for the timings."""

    intervals: int = 0
    points: int = 0
    line_bytes: list[int] = field(default_factory=list)  # bytes each interval adds to a spool
    series: dict[str, set[tuple[str, tuple[tuple[str, str], ...]]]] = field(default_factory=dict)
    kept_results: list[IntervalResult] = field(default_factory=list)
    kept_lines: list[list[str]] = field(default_factory=list)
    points_per_interval: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0


def simulate(host: SyntheticHost, n: int, keep: int) -> Simulation:
    """Build ``n`` intervals; keep the first ``keep`` (results and lines)."""
    sim = Simulation()
    t = time.perf_counter()
    for i in range(n):
        result = host.interval(i)
        points = interval_points(result, TOP_N)
        lines = [p.to_line() for p in points]
        for p in points:
            sim.series.setdefault(p.measurement, set()).add(series_key(p))
        sim.intervals += 1
        sim.points += len(points)
        sim.points_per_interval.append(len(points))
        sim.line_bytes.append(len(payload(lines)) + 1)  # the spool ends every line with \n
        if i < keep:
            sim.kept_results.append(result)
            sim.kept_lines.append(lines)
    sim.elapsed_s = time.perf_counter() - t
    return sim


def summary(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """Median, p99, max and mean of ``values`` (seconds), in ms by default."""
    return {k: v for k, v in stats(values, scale).items() if k in ("median", "p99", "max", "mean")}


# -- 1a: serialisation ------------------------------------------------------------------


def time_serialisation(results: Sequence[IntervalResult], rounds: int) -> dict[str, Any]:
    """interval_points, to_line and both, over ``results``; the median of ``rounds``."""
    n_points = sum(len(interval_points(r, TOP_N)) for r in results)
    build: list[float] = []
    lines: list[float] = []
    both: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        points = [interval_points(r, TOP_N) for r in results]
        t1 = time.perf_counter()
        for ps in points:
            [p.to_line() for p in ps]
        t2 = time.perf_counter()
        for r in results:
            [p.to_line() for p in interval_points(r, TOP_N)]
        t3 = time.perf_counter()
        build.append(t1 - t0)
        lines.append(t2 - t1)
        both.append(t3 - t2)

    def rate(times: list[float]) -> dict[str, float]:
        med = statistics.median(times)
        return {
            "points_per_s": n_points / med,
            "us_per_interval": med / len(results) * 1e6,
            "us_per_point": med / n_points * 1e6,
        }

    return {
        "intervals": len(results),
        "points": n_points,
        "rounds": rounds,
        "interval_points": rate(build),
        "to_line": rate(lines),
        "both": rate(both),
    }


# -- a probe around the runner's network sink -------------------------------------------


class Probe:
    """Wraps a ``NetworkSink``: counts requests and lines, notes failures and sends in flight."""

    def __init__(self, inner: NetworkSink) -> None:
        self.inner = inner
        self.name = inner.name
        self.requests = 0
        self.lines = 0
        self.failures = 0
        self.in_flight = False
        self.started = threading.Event()
        self.failed = threading.Event()

    def send(self, lines: Sequence[str]) -> None:
        self.in_flight = True
        self.started.set()
        try:
            self.inner.send(lines)
        except Exception:
            self.failures += 1
            self.failed.set()
            raise
        finally:
            self.in_flight = False
        self.requests += 1
        self.lines += len(lines)

    def check(self) -> str:
        return self.inner.check()

    def close(self) -> None:
        self.inner.close()

    def snapshot(self) -> tuple[int, int, int]:
        return self.requests, self.lines, self.failures


def influx_config(server: InfluxdServer, database: str, *, gzip_on: bool = True) -> InfluxConfig:
    """The [influxdb] section an operator would write: v1, auth, everything else default."""
    return InfluxConfig(
        enabled=True,
        api="v1",
        url=server.url,
        database=database,
        username=server.username,
        password=server.password,
        gzip=gzip_on,
    )


def probed_sink(cfg: InfluxConfig, spool_dir: Path) -> tuple[SpooledSink, Probe]:
    """The agent's spooled InfluxDB sink (default [spool] but its dir), with a probe."""
    sink = build_influx_sink(cfg, SpoolConfig(dir=str(spool_dir)))
    probe = Probe(sink.runner.sink)
    sink.runner.sink = probe
    return sink, probe


def count_on_server(server: InfluxdServer, database: str) -> int:
    total = 0
    for measurement, fld in MEASUREMENTS:
        rows = server.rows(f'SELECT count("{fld}") FROM "{measurement}"', database)
        total += sum(int(r["count"]) for r in rows)
    return total


# -- 1b: end to end ---------------------------------------------------------------------


def drain(
    server: InfluxdServer,
    lines: Sequence[list[str]],
    gzip_on: bool,
    work: Path,
    rep: int,
    server_pid: int | None,
) -> dict[str, Any]:
    """Spool ``lines`` (one append per interval), then time the runner draining them."""
    database = f"drain_gzip_{'on' if gzip_on else 'off'}_{rep}"
    server.create_database(database)
    sink, probe = probed_sink(influx_config(server, database, gzip_on=gzip_on), work / database)
    try:
        t = time.perf_counter()
        for interval_lines in lines:
            sink.spool.append(interval_lines)
        append_s = time.perf_counter() - t
        total = sink.spool.pending_lines()
        spooled_bytes = sink.spool.pending_bytes()
        cpu0, wall0, server0 = time.process_time(), time.perf_counter(), cpu_seconds(server_pid)
        sink.open()
        deadline = wall0 + DRAIN_TIMEOUT_S
        while sink.spool.pending_lines() > 0:
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"the spool did not drain in {DRAIN_TIMEOUT_S:g} s "
                    f"(last error: {sink.runner.last_error})"
                )
            time.sleep(POLL_S)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        server_cpu = cpu_seconds(server_pid) - server0
    finally:
        sink.close()
    stored = count_on_server(server, database)
    return {
        "gzip": gzip_on,
        "intervals": len(lines),
        "points": total,
        "spooled_bytes": spooled_bytes,
        "segment_bytes": sink.spool.segment_bytes,
        "append_us_per_interval": append_s / len(lines) * 1e6,
        "requests": probe.requests,
        "failed_requests": probe.failures,
        "lines_per_request": probe.lines / probe.requests if probe.requests else 0.0,
        "drain_s": wall,
        "points_per_s": total / wall,
        "agent_cpu_s": cpu,
        "agent_cpu_share": cpu / wall,
        "agent_cpu_us_per_point": cpu / total * 1e6,
        "influxd_cpu_s": server_cpu,
        "influxd_cpu_share": server_cpu / wall,
        "points_on_server": stored,
    }


def drain_summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median run (by points/s) of one gzip setting, with the spread of all runs."""
    ranked = sorted(runs, key=lambda r: float(r["points_per_s"]))
    median = dict(ranked[len(ranked) // 2])
    median["runs"] = len(runs)
    median["points_per_s_min"] = ranked[0]["points_per_s"]
    median["points_per_s_max"] = ranked[-1]["points_per_s"]
    median["points_on_server_all_runs"] = [r["points_on_server"] for r in runs]
    median["points_all_runs"] = [r["points"] for r in runs]
    return median


def request_sizes(lines: Sequence[list[str]]) -> dict[str, float]:
    """Request bodies: one full batch, and one interval (the steady-state request)."""
    flat = [line for interval_lines in lines for line in interval_lines]
    batch = flat[:BATCH_SIZE]
    one = [len(payload(x)) for x in lines]
    one_gz = [len(gzip.compress(payload(x), compresslevel=6, mtime=0)) for x in lines]
    raw = len(payload(batch))
    packed = len(gzip.compress(payload(batch), compresslevel=6, mtime=0))
    return {
        "batch_lines": len(batch),
        "batch_raw_bytes": raw,
        "batch_gzip_bytes": packed,
        "batch_ratio": raw / packed,
        "interval_raw_bytes": statistics.median(one),
        "interval_gzip_bytes": statistics.median(one_gz),
    }


# -- 2: the sampling cycle against live, paused and dead servers ------------------------


@dataclass
class CycleTimes:
    cycle_wall: list[float] = field(default_factory=list)
    cycle_cpu: list[float] = field(default_factory=list)
    cycle_thread_cpu: list[float] = field(default_factory=list)
    write_wall: list[float] = field(default_factory=list)
    write_cpu: list[float] = field(default_factory=list)
    write_thread_cpu: list[float] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


class Loop:
    """The agent's cycle in this process: sample, score, write to the sink (if any)."""

    def __init__(self, cfg: Config) -> None:
        self.sampler = Sampler(cfg)
        self.scorer = Scorer(
            app_units(cfg),
            host_embodied(cfg, self.sampler.scanner.cpu_count).kgco2e,
            cfg.embodied.lifespan_years,
            cfg.sci.idle_policy,
            cfg.sci.pue,
            cpu_count=self.sampler.scanner.cpu_count,
        )

    def run(self, sink: SpooledSink | None, cycles: int, keep: bool = True) -> CycleTimes:
        out = CycleTimes()
        for _ in range(cycles):
            c0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
            result = self.sampler.sample()
            intensity = IntensityValue("FR", 52.0, "builtin", "average", result.end)
            scored = self.scorer.score(result, intensity, {})
            c1, t1, w1 = time.process_time(), time.thread_time(), time.perf_counter()
            if sink is not None:
                sink.write([scored])
            c2, t2, w2 = time.process_time(), time.thread_time(), time.perf_counter()
            if keep:
                out.cycle_wall.append(w2 - w0)
                out.cycle_cpu.append(c2 - c0)
                out.cycle_thread_cpu.append(t2 - t0)
                out.write_wall.append(w2 - w1)
                out.write_cpu.append(c2 - c1)
                out.write_thread_cpu.append(t2 - t1)
                out.lines.append(len(interval_points(scored, TOP_N)) if sink else 0)
        return out


def wait_for(event: threading.Event, what: str, timeout_s: float = 10.0) -> None:
    if not event.wait(timeout_s):
        raise RuntimeError(f"timed out waiting until {what}")


def cycle_scenario(
    name: str,
    loop: Loop,
    server: InfluxdServer,
    work: Path,
    cycles: int,
    warmup: int,
    synthetic: Sequence[IntervalResult],
    backlog: Sequence[list[str]] = (),
) -> dict[str, Any]:
    """One scenario: set the server up as ``name`` says, time ``cycles`` cycles.

    Then, in the same state, time ``write`` alone with the synthetic host's intervals
    (a bigger interval than this machine's own).
    """
    log(f"cycle scenario: {name}")
    if name == "no-sink":
        loop.run(None, warmup, keep=False)
        times = loop.run(None, cycles)
        return {"scenario": name, **_cycle_figures(times, with_write=False)}
    sink, probe = probed_sink(influx_config(server, "cycle"), work / f"spool-{name}")
    sender: dict[str, Any] = {}
    try:
        for interval_lines in backlog:
            sink.spool.append(interval_lines)
        sink.open()
        loop.run(sink, warmup, keep=False)
        if name == "paused":
            # Wait until the sender is inside a request to the frozen server.
            server.pause()
            probe.started.clear()
            loop.run(sink, 1, keep=False)  # something to send
            sink.runner.wake()
            wait_for(probe.started, "the sender sent to the paused server")
            time.sleep(0.05)
        elif name == "dead":
            server.stop()
            probe.failed.clear()
            loop.run(sink, 1, keep=False)
            sink.runner.wake()
            wait_for(probe.failed, "the sender met the refused connection")
        before = probe.snapshot()
        pending_before = sink.spool.pending_lines()
        t = time.perf_counter()
        times = loop.run(sink, cycles)
        run_s = time.perf_counter() - t
        after = probe.snapshot()
        sender = {
            "run_s": run_s,
            "requests_done": after[0] - before[0],
            "lines_sent": after[1] - before[1],
            "failed_requests": after[2] - before[2],
            "in_flight_at_end": probe.in_flight,
            "backlog_before": pending_before,
            "backlog_after": sink.spool.pending_lines(),
            "last_error": sink.runner.last_error,
        }
        synthetic_times = time_writes(sink, synthetic)
    finally:
        if name == "paused":
            server.resume()
        sink.close()
    return {
        "scenario": name,
        **_cycle_figures(times, with_write=True),
        "sender": sender,
        "synthetic_write_wall_ms": summary(synthetic_times.write_wall),
        "synthetic_write_cpu_ms": summary(synthetic_times.write_cpu),
        "synthetic_lines_per_write": statistics.median(synthetic_times.lines),
    }


def time_writes(sink: SpooledSink, results: Sequence[IntervalResult]) -> CycleTimes:
    """``write`` alone, one interval at a time."""
    out = CycleTimes()
    for result in results:
        c0, w0 = time.process_time(), time.perf_counter()
        sink.write([result])
        c1, w1 = time.process_time(), time.perf_counter()
        out.write_wall.append(w1 - w0)
        out.write_cpu.append(c1 - c0)
        out.lines.append(len(interval_points(result, TOP_N)))
    return out


def _cycle_figures(times: CycleTimes, with_write: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "cycles": len(times.cycle_wall),
        "cycle_wall_ms": summary(times.cycle_wall),
        "cycle_cpu_ms": summary(times.cycle_cpu),
        "cycle_thread_cpu_ms": summary(times.cycle_thread_cpu),
    }
    if with_write:
        figures |= {
            "write_wall_ms": summary(times.write_wall),
            "write_cpu_ms": summary(times.write_cpu),
            "write_thread_cpu_ms": summary(times.write_thread_cpu),
            "lines_per_write": statistics.median(times.lines),
        }
    return figures


def loop_config() -> Config:
    """Model sensor only (no RAPL or NVML needed), no store, no HTTP."""
    return model_config(host=HOST)


# -- 3: spool per hour of outage, fleet sizing ------------------------------------------


def spool_hour(lines: Sequence[list[str]], work: Path) -> dict[str, int]:
    """Append one hour of intervals to a default spool; what it holds and takes on disk."""
    directory = work / "spool-hour"
    max_bytes = SPOOL_MAX_BYTES
    with Spool(directory, max_bytes, segment_bytes=min(MIB, max_bytes // 4)) as spool:
        for interval_lines in lines[:INTERVALS_PER_HOUR]:
            spool.append(interval_lines)
        pending = spool.pending_bytes()
        pending_lines = spool.pending_lines()
    on_disk = sum(p.stat().st_size for p in directory.glob("*.seg"))
    return {
        "intervals": min(len(lines), INTERVALS_PER_HOUR),
        "pending_bytes": pending,
        "pending_lines": pending_lines,
        "segment_bytes_on_disk": on_disk,
    }


def sizing(sim: Simulation, sizes: dict[str, float], hour: dict[str, int]) -> dict[str, Any]:
    bytes_per_interval = statistics.fmean(sim.line_bytes)
    per_hour = bytes_per_interval * INTERVALS_PER_HOUR
    points_per_interval = sim.points / sim.intervals
    per_host = {m: len(s) for m, s in sim.series.items()}
    host_series = sum(n for m, n in per_host.items() if m != "grid_intensity")
    return {
        "simulated_intervals": sim.intervals,
        "simulated_hours": sim.intervals * INTERVAL_S / 3600,
        "simulation_s": sim.elapsed_s,
        "bytes_per_interval_mean": bytes_per_interval,
        "bytes_per_interval_min": min(sim.line_bytes),
        "bytes_per_interval_max": max(sim.line_bytes),
        "spool_mb_per_hour": per_hour / 1e6,
        "spool_mib_per_hour": per_hour / MIB,
        "spool_max_mib": SPOOL_MAX_BYTES / MIB,
        "outage_hours_held": SPOOL_MAX_BYTES / per_hour,
        "spool_hour_check": hour,
        "points_per_interval_mean": points_per_interval,
        "points_per_interval_min": min(sim.points_per_interval),
        "points_per_interval_max": max(sim.points_per_interval),
        "points_per_host_per_day": points_per_interval * INTERVALS_PER_DAY,
        "series_per_measurement": per_host,
        "series_per_host": host_series,
        "series_shared_per_zone": per_host.get("grid_intensity", 0),
        "raw_bytes_per_host_per_day": bytes_per_interval * INTERVALS_PER_DAY,
        "gzip_bytes_per_host_per_day": sizes["interval_gzip_bytes"] * INTERVALS_PER_DAY,
    }


# -- report -----------------------------------------------------------------------------


def influxd_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _ms(v: float) -> str:
    return f"{v:.3f}"


def _n(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def _counted(values: Sequence[int]) -> str:
    if len(set(values)) == 1:
        return f"{values[0]:,}" + (f" (each of {len(values)} runs)" if len(values) > 1 else "")
    return ", ".join(f"{v:,}" for v in values)


SCENARIO_LABELS = {
    "no-sink": "no InfluxDB sink (baseline)",
    "live": "(i) influxd live, sender idle",
    "live-backlog": "(i) influxd live, sender draining a backlog",
    "paused": "(iii) influxd paused (SIGSTOP): requests hang",
    "dead": "(ii) influxd stopped: connection refused",
}


def sections(f: dict[str, Any]) -> list[dict[str, Any]]:
    """What it measures, then the three sets of figures (see the module docstring)."""
    return [
        section("", ABOUT),
        section("", bullets(_setup(f))),
        *_throughput(f),
        *_cycle_sections(f),
        *_sizing_sections(f),
    ]


def _setup(f: dict[str, Any]) -> list[str]:
    m, sz = f["machine"], f["sizing"]
    groups = sum(len(v) for v in APP_PROCESSES.values())
    return [
        f"load average at start {f['loadavg_start']}, at end {f['loadavg_end']}; processes on "
        f"the host at start {f['processes_on_host_start']}, at end {f['processes_on_host_end']}"
        + (" (quick smoke run)" if f["quick"] else ""),
        f"server: {f['influxd']} on loopback, auth on, started by the script "
        f"(same machine: influxd and the agent share the CPUs; {m['cpus_usable']} CPUs)",
        f"synthetic host: 1 host, 4 RAPL components, {len(APP_PROCESSES)} apps, "
        f"{groups * PROCESSES_PER_NAME} processes in {groups} (app, name) groups → top "
        f"{TOP_N} + `_other`, SCI rows (the default policy), grid intensity; "
        f"{sz['points_per_interval_mean']:.1f} points per interval "
        f"(min {sz['points_per_interval_min']}, max {sz['points_per_interval_max']})",
        f"defaults: interval {INTERVAL_S:g} s, batch_size {BATCH_SIZE}, flush_interval_s "
        f"{DEFAULTS.influxdb.flush_interval_s:g}, timeout_s {DEFAULTS.influxdb.timeout_s:g}, "
        f"spool max {DEFAULTS.spool.max_mb:g} MiB",
    ]


def _throughput(f: dict[str, Any]) -> list[dict[str, Any]]:
    ser, sizes, m = f["serialisation"], f["request_sizes"], f["machine"]
    rows = []
    for label, key in (
        ("`interval_points` (IntervalResult → Points)", "interval_points"),
        ("`Point.to_line`", "to_line"),
        ("**both** (what `SpooledSink.write` does)", "both"),
    ):
        r = ser[key]
        rows.append(
            [
                label,
                _n(r["points_per_s"]),
                f"{r['us_per_point']:.2f}",
                f"{r['us_per_interval']:.0f}",
            ]
        )
    d0 = f["drain"][0]
    drains = [
        [
            "on" if d["gzip"] else "off",
            f"{d['points']:,}",
            str(d["requests"]),
            f"{d['lines_per_request']:.0f}",
            f"{d['drain_s']:.2f}",
            f"**{_n(d['points_per_s'])}** ({_n(d['points_per_s_min'])}–"
            f"{_n(d['points_per_s_max'])})",
            f"{d['agent_cpu_share']:.0%}",
            f"{d['influxd_cpu_share']:.0%}",
            f"{d['agent_cpu_us_per_point']:.2f}",
            _counted(d["points_on_server_all_runs"]),
            f"{d['append_us_per_interval']:.0f}",
        ]
        for d in f["drain"]
    ]
    line_bytes = d0["spooled_bytes"] / d0["points"]
    notes = [
        f"request body of a full batch ({sizes['batch_lines']} lines): "
        f"{sizes['batch_raw_bytes'] / 1e3:,.0f} kB raw, {sizes['batch_gzip_bytes'] / 1e3:,.0f} kB "
        f"gzip (×{sizes['batch_ratio']:.1f})",
        f"fewer than {BATCH_SIZE} lines per request: a batch never spans two spool "
        f"segments ({d0['segment_bytes'] / MIB:g} MiB ≈ "
        f"{d0['segment_bytes'] / line_bytes:,.0f} lines of {line_bytes:.0f} bytes), so a backlog "
        f"leaves as one {BATCH_SIZE}-line request and one shorter request per segment",
        "agent CPU / wall: every thread of this process (the sender: reading the spool, "
        "joining, gzip, HTTP); influxd CPU / wall: its utime + stime from /proc (100 % = "
        f"one core; the machine has {m['cpus_usable']})",
    ]
    runs = f"run{'s' if d0['runs'] > 1 else ''}"
    return [
        section("1. Points serialised and shipped per second"),
        section(
            f"(a) Serialisation only ({ser['intervals']} intervals, {ser['points']:,} points, "
            f"median of {ser['rounds']} rounds, one thread)",
            columns=["stage", "points/s", "µs per point", "µs per interval"],
            rows=rows,
        ),
        section(
            f"(b) End to end: spool → SpoolRunner → InfluxV1Sink → influxd ({d0['intervals']} "
            f"intervals spooled first, then drained; median of {d0['runs']} {runs} per "
            "setting, a fresh database each)",
            columns=[
                "gzip",
                "points",
                "requests",
                "lines/request",
                "drain (s)",
                "**points/s** (min–max)",
                "agent CPU / wall",
                "influxd CPU / wall",
                "agent CPU µs/point",
                "points on server",
                "spool append µs/interval",
            ],
            rows=drains,
        ),
        section("", bullets(notes)),
    ]


def _cycle_sections(f: dict[str, Any]) -> list[dict[str, Any]]:
    writes, cycles, senders = [], [], []
    for s in f["scenarios"]:
        label = SCENARIO_LABELS[s["scenario"]]
        cw, cc, ct = s["cycle_wall_ms"], s["cycle_cpu_ms"], s["cycle_thread_cpu_ms"]
        cycles.append(
            [
                label,
                *(
                    _ms(x[k])
                    for x, k in (
                        (cw, "median"),
                        (cw, "p99"),
                        (cc, "median"),
                        (cc, "p99"),
                        (ct, "median"),
                        (ct, "p99"),
                    )
                ),
            ]
        )
        if "write_wall_ms" not in s:
            continue
        ww, wc, wt = s["write_wall_ms"], s["write_cpu_ms"], s["write_thread_cpu_ms"]
        sw, sc = s["synthetic_write_wall_ms"], s["synthetic_write_cpu_ms"]
        writes.append(
            [
                label,
                f"{s['lines_per_write']:.0f}",
                _ms(ww["median"]),
                _ms(ww["p99"]),
                _ms(wc["median"]),
                _ms(wc["p99"]),
                _ms(wt["p99"]),
                f"{s['synthetic_lines_per_write']:.0f}",
                _ms(sw["median"]),
                _ms(sw["p99"]),
                _ms(sc["median"]),
                _ms(sc["p99"]),
            ]
        )
        snd = s.get("sender")
        if snd:
            senders.append(
                [
                    label,
                    f"{snd['run_s']:.2f}",
                    str(snd["requests_done"]),
                    str(snd["failed_requests"]),
                    f"{snd['lines_sent']:,}",
                    "yes" if snd["in_flight_at_end"] else "no",
                    f"{snd['backlog_before']:,} → {snd['backlog_after']:,}",
                    (snd["last_error"] or "—")[:90],
                ]
            )
    return [
        section(
            f"2. Sampling cycle with InfluxDB live, dead and paused ({f['cycles']} cycles back "
            f"to back per scenario, after {f['warmup']} warm-up)",
            "Cycle = `Sampler.sample()` (model sensor, this host's own processes) → "
            "`Scorer.score` → `SpooledSink.write([result])`; "
            "CPU = `time.process_time()` (the whole process, sender thread included); "
            '"loop CPU" = `time.thread_time()` of the sampling thread alone. ms.',
            [
                "scenario",
                "lines/write",
                "write() wall median",
                "write() wall p99",
                "write() CPU median",
                "write() CPU p99",
                "write() loop CPU p99",
                "synthetic interval: lines/write",
                "wall median",
                "wall p99",
                "CPU median",
                "CPU p99",
            ],
            writes,
        ),
        section(
            "",
            columns=[
                "scenario",
                "cycle wall median",
                "cycle wall p99",
                "cycle CPU median",
                "cycle CPU p99",
                "loop CPU median",
                "loop CPU p99",
            ],
            rows=cycles,
        ),
        section(
            "",
            "What the sender did while the cycles ran:",
            [
                "scenario",
                "run (s)",
                "requests done",
                "failed",
                "lines sent",
                "in a request at the end",
                "backlog before → after (lines)",
                "last error",
            ],
            senders,
        ),
    ]


def _sizing_sections(f: dict[str, Any]) -> list[dict[str, Any]]:
    sz, sizes = f["sizing"], f["request_sizes"]
    hour = sz["spool_hour_check"]
    rows = [
        [
            "bytes of line protocol per interval (spooled, mean; min–max)",
            f"{sz['bytes_per_interval_mean']:,.0f} ({sz['bytes_per_interval_min']:,}–"
            f"{sz['bytes_per_interval_max']:,})",
        ],
        [f"intervals per hour at {INTERVAL_S:g} s", str(INTERVALS_PER_HOUR)],
        [
            "**spool growth per hour of outage**",
            f"**{sz['spool_mb_per_hour']:.2f} MB** ({sz['spool_mib_per_hour']:.2f} MiB)",
        ],
        [
            f"check: {hour['intervals']} intervals appended to a default spool",
            f"{hour['pending_bytes']:,} bytes pending, {hour['segment_bytes_on_disk']:,} bytes of "
            f"segments on disk, {hour['pending_lines']:,} lines",
        ],
        [
            f"**outage the default {sz['spool_max_mib']:g} MiB spool holds**",
            f"**{sz['outage_hours_held']:.0f} hours** ({sz['outage_hours_held'] / 24:.1f} days)",
        ],
        ["points per interval (mean)", f"{sz['points_per_interval_mean']:.2f}"],
        [
            f"**points per host per day** ({INTERVALS_PER_DAY:,} intervals)",
            f"**{sz['points_per_host_per_day']:,.0f}**",
        ],
        [
            f"**series per host** (distinct measurement + tag set over "
            f"{round(sz['simulated_hours'], 2):g} simulated hours)",
            f"**{sz['series_per_host']}** (+ {sz['series_shared_per_zone']} grid_intensity series "
            "shared by the hosts of a zone)",
        ],
        *([f"- {meas}", str(n)] for meas, n in sorted(sz["series_per_measurement"].items())),
        ["line protocol per host per day, raw", f"{sz['raw_bytes_per_host_per_day'] / 1e6:.1f} MB"],
        [
            f"request bodies per host per day, gzip (one request per interval in steady state, "
            f"{sizes['interval_gzip_bytes']:,.0f} B each; HTTP headers not counted)",
            f"{sz['gzip_bytes_per_host_per_day'] / 1e6:.1f} MB",
        ],
    ]
    ppi = sz["points_per_interval_mean"]
    fleet = [
        [
            f"{hosts:,}",
            _n(hosts * ppi / INTERVAL_S),
            _n(hosts / INTERVAL_S),
            f"{hosts * sz['points_per_host_per_day']:,.0f}",
            f"{hosts * sz['series_per_host'] + sz['series_shared_per_zone']:,}",
        ]
        for hosts in (1, 100, 1000, 10000)
    ]
    return [
        section(
            "3. Spool per hour of outage, and fleet sizing (one host, default settings)",
            columns=["figure", "value"],
            rows=rows,
        ),
        section(
            "",
            "Fleet: what the server receives at the default interval (steady state: the sender "
            f"wakes every {DEFAULTS.influxdb.flush_interval_s:g} s, so each host sends one "
            "request per interval):",
            ["hosts", "points/s", "requests/s", "points/day", "series"],
            fleet,
        ),
        section(
            "",
            f"Series per host depend on which process groups ever reach the top {TOP_N}: with "
            "loads that vary, every group near the cut-off shows up over a day, so a host has "
            f"up to (groups + 1) process_energy series, not {TOP_N + 1}. "
            f"Runtime of this benchmark: {f['elapsed_s']:.0f} s.",
        ),
    ]


# -- main -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    drain_intervals: int
    drain_reps: int
    serialise_intervals: int
    serialise_rounds: int
    simulated_intervals: int
    cycles: int
    warmup: int
    backlog_intervals: int


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Plan]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_output_args(p)
    p.add_argument(
        "--quick", action="store_true", help="a fast smoke run (smaller sizes, 2 simulated hours)"
    )
    p.add_argument("--cycles", type=int, default=None, help="timed cycles per scenario (100)")
    p.add_argument("--seed", type=int, default=1, help="seed of the synthetic host")
    args = p.parse_args(argv)
    if args.quick:
        plan = Plan(200, 1, 100, 3, 1440, 20, 3, 200)
    else:
        plan = Plan(2000, 5, 500, 7, INTERVALS_PER_DAY, 100, 10, 2000)
    if args.cycles is not None:
        if args.cycles < 1:
            p.error("--cycles must be 1 or more")
        plan = Plan(**{**plan.__dict__, "cycles": args.cycles})
    return args, plan


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit, so ``finally`` stops the server."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(args: argparse.Namespace, plan: Plan, binary: str, tmp: Path) -> dict[str, Any]:
    started = time.perf_counter()
    figures: dict[str, Any] = {
        "quick": args.quick,
        "machine": machine_info(),
        "loadavg_start": load_average(),
        "processes_on_host_start": count_pids(),
        "influxd": influxd_version(binary),
        "cycles": plan.cycles,
        "warmup": plan.warmup,
    }
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    host = SyntheticHost(args.seed, today - timedelta(days=1))
    keep = max(plan.drain_intervals, plan.serialise_intervals, plan.backlog_intervals)
    keep = max(keep, INTERVALS_PER_HOUR) + 4 * plan.cycles  # + the scenarios' own
    n = max(plan.simulated_intervals, keep)
    log(f"simulating {n} intervals of one host")
    sim = simulate(host, n, keep)
    log(f"  {sim.points:,} points in {sim.elapsed_s:.1f} s; timing serialisation")
    # Keep the benchmark's own data (thousands of kept intervals) out of the cyclic
    # collector's scans, so that its size does not show up as pauses in the timings.
    gc.collect()
    gc.freeze()
    figures["serialisation"] = time_serialisation(
        sim.kept_results[: plan.serialise_intervals], plan.serialise_rounds
    )
    sizes = request_sizes(sim.kept_lines[: plan.drain_intervals])
    figures["request_sizes"] = sizes
    figures["sizing"] = sizing(sim, sizes, spool_hour(sim.kept_lines, tmp))

    server = InfluxdServer(binary, tmp / "influxd")
    (tmp / "influxd").mkdir()
    try:
        log(f"starting influxd on {server.url}")
        server.start()
        server.create_database("cycle")
        server_pid = find_pid(str(server.config_path))
        runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
        to_drain = sim.kept_lines[: plan.drain_intervals]
        for i in range(plan.drain_reps):
            for gzip_on in (True, False) if i % 2 == 0 else (False, True):
                log(
                    f"drain {i + 1}/{plan.drain_reps}: {plan.drain_intervals} intervals, "
                    f"gzip {'on' if gzip_on else 'off'}"
                )
                runs[gzip_on].append(drain(server, to_drain, gzip_on, tmp, i, server_pid))
        figures["drain"] = [drain_summary(runs[True]), drain_summary(runs[False])]
        figures["drain_runs"] = runs[True] + runs[False]
        loop = Loop(loop_config())
        loop.sampler.open()
        try:
            backlog = sim.kept_lines[: plan.backlog_intervals]
            # Later intervals than the backlog's, a slice per scenario: no overwrites.
            fresh = sim.kept_results[-4 * plan.cycles :]
            scenarios: list[tuple[str, Sequence[list[str]]]] = [
                ("no-sink", ()),
                ("live", ()),
                ("live-backlog", backlog),
                ("paused", ()),
                ("dead", ()),  # last: it stops the server
            ]
            figures["scenarios"] = [
                cycle_scenario(
                    name,
                    loop,
                    server,
                    tmp,
                    plan.cycles,
                    plan.warmup,
                    fresh[(i - 1) * plan.cycles : i * plan.cycles] if i else (),
                    bl,
                )
                for i, (name, bl) in enumerate(scenarios)
            ]
        finally:
            loop.sampler.close()
    finally:
        server.stop()
        log("influxd stopped")
    figures["elapsed_s"] = time.perf_counter() - started
    figures["loadavg_end"] = load_average()
    figures["processes_on_host_end"] = count_pids()
    return figures


def main(argv: list[str]) -> int:
    args, plan = parse_args(argv)
    binary = find_binary("influxd")
    if binary is None:
        print("influxd not found: apt-get install influxdb", file=sys.stderr)
        return 2
    # The dead and paused scenarios make the runner log warnings by design.
    logging.getLogger("sci_agent").setLevel(logging.ERROR)
    with terminate_cleanly(), tempfile.TemporaryDirectory(prefix="sci-bench-export-") as tmp:
        figures = run(args, plan, binary, Path(tmp))
    emit(args, figures, "bench_export", TITLE, sections(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
