"""Generated measurements for tests, demos and benchmarks: N hosts × M apps × days.

``intervals`` generates ``IntervalResult`` records, and the real sinks write them:
the store's (``fill_store``, ``SqliteStore``) or InfluxDB's (``write_influx``, the same
points through ``InfluxV1Sink``), so both hold what an agent would write. They obey the
pipeline's invariants: each interval's app rows (``_idle`` and ``_unattributed``
included) add up to its components, SCI rows use the proportional idle policy (apps
carry no static share), and each app's score is Σ carbon / Σ units. The first
``model_hosts`` hosts report ``cpu``/``dram`` estimated by the power model
(``source=model``), the others RAPL's ``cpu0``/``dram0``; the first RAPL host also has
an NVIDIA GPU. The last ``stale_hosts`` hosts stopped reporting ``stale_s`` before the
end. The grid intensity, written with each host's intervals, falls back to ``builtin``
one hour in twelve. Each app runs one process, ``<app>-worker`` (pid 1000 + its index).

``python -m dashboard.sample_data var/demo.db --hosts 3 --apps 5 --days 2`` writes a demo store.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.config import InfluxConfig
from agent.records import (
    AppEnergy,
    ComponentReading,
    IntensityValue,
    IntervalResult,
    ProcessEnergy,
    SciRecord,
)
from exporters.delivery import RetryableError
from exporters.influxdb_v1 import InfluxV1Sink
from exporters.points import interval_points
from exporters.process_rows import ProcessRows
from exporters.sqlite_store import SqliteStore

APP_NAMES = ("web", "api", "batch", "ml", "cron", "db", "cache", "queue", "search", "etl")
UNITS = ("request", "request", "job", "inference", None)
LIFESPAN_S = 4 * 365.25 * 86400
EMBODIED_G = 400_000.0  # 400 kg CO2e per host
ZONE = "FR"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH = 512  # intervals per write


@dataclass(frozen=True)
class SampleSpec:
    """What to generate; names default to ``host-01…`` and ``APP_NAMES``."""

    hosts: int = 3
    apps: int = 4
    days: float = 2.0
    interval_s: float = 30.0
    end_ms: int | None = None  # default: now, rounded down to the interval
    model_hosts: int = 1
    stale_hosts: int = 1
    stale_s: float = 7200.0
    host_names: tuple[str, ...] = ()
    app_names: tuple[str, ...] = ()
    process_names: tuple[str, ...] = ()  # one per app; default ``<app>-worker``
    zone: str = ZONE

    def names(self) -> tuple[list[str], list[str]]:
        hosts = list(self.host_names) or [f"host-{i + 1:02d}" for i in range(self.hosts)]
        apps = list(self.app_names) or [
            APP_NAMES[i] if i < len(APP_NAMES) else f"app-{i + 1:02d}" for i in range(self.apps)
        ]
        return hosts, apps


@dataclass(frozen=True)
class SampleInfo:
    """What was generated, for assertions."""

    hosts: list[str]
    apps: list[str]
    units: dict[str, str | None]
    model_hosts: list[str]
    gpu_hosts: list[str]
    stale_hosts: list[str]
    end_ms: int
    start_ms: int
    interval_s: float
    zone: str
    last_ms: dict[str, int] = field(default_factory=dict)
    rows: int = 0


def plan(spec: SampleSpec) -> SampleInfo:
    """The names, roles and times ``spec`` produces."""
    hosts, apps = spec.names()
    step = round(spec.interval_s * 1000)
    end = spec.end_ms if spec.end_ms is not None else (int(time.time() * 1000) // step) * step
    count = int(spec.days * 86400 * 1000 // step)
    start = end - count * step
    n_model = min(spec.model_hosts, len(hosts))
    stale = hosts[len(hosts) - min(spec.stale_hosts, len(hosts)) :]
    gpu = [hosts[n_model]] if n_model < len(hosts) else []
    cut = round(spec.stale_s * 1000 / step) * step
    last = {h: end - cut if h in stale else end for h in hosts}
    return SampleInfo(
        hosts=hosts,
        apps=apps,
        units={a: UNITS[i % len(UNITS)] for i, a in enumerate(apps)},
        model_hosts=hosts[:n_model],
        gpu_hosts=gpu,
        stale_hosts=stale,
        end_ms=end,
        start_ms=start,
        interval_s=step / 1000,
        zone=spec.zone,
        last_ms=last,
    )


def intensity_at(ts_ms: int) -> tuple[str, float, int]:
    """(provider, gCO2e/kWh, fallback) of the generated grid at ``ts_ms``."""
    if (ts_ms // 3_600_000) % 12 == 5:
        return "builtin", 56.0, 1
    phase = 2 * math.pi * (ts_ms % 86_400_000) / 86_400_000
    return "electricitymaps", 60.0 + 40.0 * math.sin(phase), 0


def intervals(spec: SampleSpec) -> Iterator[IntervalResult]:
    """Every host's intervals in time order, host by host."""
    info = plan(spec)
    step = round(info.interval_s * 1000)
    for i, host in enumerate(info.hosts):
        for t in range(info.start_ms + step, info.last_ms[host] + 1, step):
            yield _interval(spec, info, i, host, t)


def _interval(spec: SampleSpec, info: SampleInfo, i: int, host: str, t: int) -> IntervalResult:
    """Host ``i``'s interval ending at ``t`` (ms)."""
    dt = info.interval_s
    gpu = host in info.gpu_hosts
    cpu_name, dram_name, source = (
        ("cpu", "dram", "model") if host in info.model_hosts else ("cpu0", "dram0", "rapl")
    )
    phase = 2 * math.pi * (t % 86_400_000) / 86_400_000
    provider, gco2, fallback = intensity_at(t)
    cpu_j: list[float] = []
    dram_j: list[float] = []
    gpu_j: list[float] = []
    cpu_s: list[float] = []
    for a in range(len(info.apps)):
        base = 2.0 + (a * 7 + i * 3) % 11
        w = base * (1.2 + math.sin(phase + a + i))
        cpu_j.append(w * dt)
        dram_j.append(0.1 * base * dt)
        gpu_j.append(60.0 * (1.1 + math.sin(phase * 3 + a)) * dt if gpu and a == 0 else 0.0)
        cpu_s.append(w / 20.0 * dt)
    idle = AppEnergy("_idle", 15.0 * dt, 2.0 * dt, 25.0 * dt if gpu else 0.0)
    unattributed = AppEnergy("_unattributed", 0.5 * dt, 0.0, 0.0)
    cpu_total = sum(cpu_j) + idle.cpu_joules + unattributed.cpu_joules
    components = [
        ComponentReading(cpu_name, "cpu", source, cpu_total),
        ComponentReading(dram_name, "dram", source, sum(dram_j) + idle.dram_joules),
    ]
    if gpu:
        components.append(ComponentReading("gpu0", "gpu", "nvml", sum(gpu_j) + idle.gpu_joules))
    active = sum(cpu_j) + sum(dram_j) + sum(gpu_j)
    overhead = idle.joules + unattributed.joules
    host_m = EMBODIED_G * dt / LIFESPAN_S
    apps, processes, scis = [], [], []
    for a, app in enumerate(info.apps):
        name = spec.process_names[a] if a < len(spec.process_names) else f"{app}-worker"
        energy = (cpu_j[a], dram_j[a], gpu_j[a])
        processes.append(ProcessEnergy(1000 + a, name, app, cpu_s[a], *energy))
        apps.append(AppEnergy(app, cpu_j[a], dram_j[a], gpu_j[a], cpu_s[a]))
        joules = cpu_j[a] + dram_j[a] + gpu_j[a]
        energy_kwh = (joules + overhead * joules / active) / 3.6e6
        operational = energy_kwh * gco2
        embodied = host_m * cpu_s[a] / sum(cpu_s)
        unit = info.units[app]
        units = (
            float(round((5 + a) * dt * (1.0 + 0.8 * math.sin(t / 137_000 + a)))) if unit else 0.0
        )
        score = (operational + embodied) / units if units > 0 else None
        scis.append(SciRecord(app, unit, units, energy_kwh, gco2, operational, embodied, score))
    end = EPOCH + timedelta(milliseconds=t)
    return IntervalResult(
        host=host,
        start=end - timedelta(seconds=dt),
        end=end,
        components=tuple(components),
        processes=tuple(processes),
        apps=tuple(apps),
        idle=idle,
        unattributed=unattributed,
        intensity=IntensityValue(spec.zone, gco2, provider, "average", end, bool(fallback)),
        sci=tuple(scis),
    )


def _batches(results: Iterable[IntervalResult]) -> Iterator[list[IntervalResult]]:
    batch: list[IntervalResult] = []
    for r in results:
        batch.append(r)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def fill_store(path: str | Path, spec: SampleSpec) -> SampleInfo:
    """Write ``spec``'s intervals into the store at ``path`` through ``SqliteStore``;
    ``rows`` counts the table rows written."""
    store = SqliteStore(path, retention_days=36500)
    store.open()
    count = 0
    try:
        for batch in _batches(intervals(spec)):
            store.write(batch)
            count += sum(_rows(r) for r in batch)
    finally:
        store.close()
    return SampleInfo(**{**plan(spec).__dict__, "rows": count})


def _rows(r: IntervalResult) -> int:
    """The store's rows of a generated interval (its apps each run one process name)."""
    parts = (r.components, r.energy_rows(), r.processes, r.sci)
    return 2 + sum(map(len, parts))  # + its intervals and grid_intensity rows


def write_influx(
    url: str,
    database: str,
    spec: SampleSpec,
    username: str | None = None,
    password: str | None = None,
) -> SampleInfo:
    """Write ``spec``'s intervals to an existing InfluxDB database (``send_influx``)."""
    count = send_influx(url, database, intervals(spec), username, password)
    return SampleInfo(**{**plan(spec).__dict__, "rows": count})


def send_influx(
    url: str,
    database: str,
    results: Iterable[IntervalResult],
    username: str | None = None,
    password: str | None = None,
) -> int:
    """Send ``results`` as the agent's InfluxDB sink would (its points, through its network
    sink ``InfluxV1Sink``) to an existing database; return the number of points."""
    cfg = InfluxConfig(
        enabled=True, url=url, api="v1", database=database, username=username,
        password=password, timeout_s=300.0,
    )  # fmt: skip
    sink = InfluxV1Sink(cfg)
    rows = ProcessRows()
    count = 0
    try:
        for batch in _batches(results):
            lines = [p.to_line() for r in batch for p in interval_points(r, rows=rows)]
            _send(sink, lines)
            count += len(lines)
    finally:
        sink.close()
    return count


def _send(sink: InfluxV1Sink, lines: list[str], attempts: int = 8) -> None:
    """Send ``lines``, backing off while a busy server answers 5xx (its cache full)."""
    for attempt in range(attempts):
        try:
            sink.send(lines)
            return
        except RetryableError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2**attempt)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write generated measurements to a store.")
    parser.add_argument("path", help="the SQLite store to create")
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info = fill_store(args.path, SampleSpec(args.hosts, args.apps, args.days, args.interval))
    print(f"{info.rows} rows in {time.perf_counter() - started:.1f}s → {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
