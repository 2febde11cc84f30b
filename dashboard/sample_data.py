"""Generated measurements for tests, demos and benchmarks: N hosts × M apps × days.

Rows follow the store's schema (``exporters/sqlite_store.py``) and obey its invariants:
each interval's app rows (``_idle`` and ``_unattributed`` included) add up to its
components, SCI rows use the proportional idle policy, and each app's score is
Σ carbon / Σ units. The first ``model_hosts`` hosts report ``cpu``/``dram`` estimated by
the power model (``source=model``), the others RAPL's ``cpu0``/``dram0``; the first RAPL
host also has an NVIDIA GPU. The last ``stale_hosts`` hosts stopped reporting
``stale_s`` before the end. The grid intensity falls back to ``builtin`` one hour in
twelve. The same rows are written to SQLite (``fill_store``, with ``executemany``) or
to InfluxDB as line protocol (``write_influx``).

``python -m dashboard.sample_data var/demo.db --hosts 3 --apps 5 --days 2`` writes a demo store.
"""

from __future__ import annotations

import argparse
import base64
import math
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

from exporters.sqlite_store import SqliteStore

APP_NAMES = ("web", "api", "batch", "ml", "cron", "db", "cache", "queue", "search", "etl")
UNITS = ("request", "request", "job", "inference", None)
LIFESPAN_S = 4 * 365.25 * 86400
EMBODIED_G = 400_000.0  # 400 kg CO2e per host
ZONE = "FR"
Row = tuple[object, ...]
TABLES = ("intervals", "host_energy", "app_energy", "process_energy", "sci", "grid_intensity")


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


def generate(spec: SampleSpec, chunk_s: float = 86400.0) -> Iterator[tuple[str, list[Row]]]:
    """``(table, rows)`` chunks in each table's key order, host by host, day by day."""
    info = plan(spec)
    step = round(info.interval_s * 1000)
    dt = info.interval_s
    per_chunk = max(1, int(chunk_s * 1000 // step))
    grid: list[Row] = []
    for t in range(info.start_ms + step, info.end_ms + 1, step):
        provider, gco2, fallback = intensity_at(t)
        grid.append((spec.zone, provider, t, gco2, "average", fallback, dt))
    yield "grid_intensity", grid
    host_m = EMBODIED_G * dt / LIFESPAN_S
    napps = len(info.apps)
    for i, host in enumerate(info.hosts):
        model = host in info.model_hosts
        gpu = host in info.gpu_hosts
        cpu_name, dram_name, source = (
            ("cpu", "dram", "model") if model else ("cpu0", "dram0", "rapl")
        )
        stamps = list(range(info.start_ms + step, info.last_ms[host] + 1, step))
        for c0 in range(0, len(stamps), per_chunk):
            chunk = stamps[c0 : c0 + per_chunk]
            intervals: list[Row] = []
            parts: dict[str, list[Row]] = {cpu_name: [], dram_name: []}
            if gpu:
                parts["gpu0"] = []
            apps: dict[str, list[Row]] = {a: [] for a in (*info.apps, "_idle", "_unattributed")}
            scis: dict[str, list[Row]] = {a: [] for a in info.apps}
            procs: list[Row] = []
            for t in chunk:
                phase = 2 * math.pi * (t % 86_400_000) / 86_400_000
                _, gco2, _ = intensity_at(t)
                cpu_j: list[float] = []
                dram_j: list[float] = []
                gpu_j: list[float] = []
                cpu_s: list[float] = []
                for a in range(napps):
                    base = 2.0 + (a * 7 + i * 3) % 11
                    w = base * (1.2 + math.sin(phase + a + i))
                    cpu_j.append(w * dt)
                    dram_j.append(0.1 * base * dt)
                    gpu_j.append(
                        60.0 * (1.1 + math.sin(phase * 3 + a)) * dt if gpu and a == 0 else 0.0
                    )
                    cpu_s.append(w / 20.0 * dt)
                idle = (15.0 * dt, 2.0 * dt, 25.0 * dt if gpu else 0.0)
                unattributed = 0.5 * dt
                active = sum(cpu_j) + sum(dram_j) + sum(gpu_j)
                total = active + sum(idle) + unattributed
                overhead = sum(idle) + unattributed
                intervals.append((host, t, t - step, dt, total, sum(idle), unattributed))
                cpu_total = sum(cpu_j) + idle[0] + unattributed
                parts[cpu_name].append((host, cpu_name, source, t, cpu_total, cpu_total / dt))
                parts[dram_name].append(
                    (
                        host,
                        dram_name,
                        source,
                        t,
                        sum(dram_j) + idle[1],
                        (sum(dram_j) + idle[1]) / dt,
                    )
                )
                if gpu:
                    g = sum(gpu_j) + idle[2]
                    parts["gpu0"].append((host, "gpu0", "nvml", t, g, g / dt))
                used_s = sum(cpu_s)
                for a, app in enumerate(info.apps):
                    joules = cpu_j[a] + dram_j[a] + gpu_j[a]
                    apps[app].append(
                        (host, app, t, cpu_j[a], dram_j[a], gpu_j[a], 0.0, joules, cpu_s[a])
                    )
                    process = (
                        spec.process_names[a] if a < len(spec.process_names) else f"{app}-worker"
                    )
                    procs.append((host, app, process, 1000 + a, t, joules, cpu_s[a]))
                    energy_kwh = (joules + overhead * joules / active) / 3.6e6
                    operational = energy_kwh * gco2
                    embodied = host_m * cpu_s[a] / used_s
                    unit = info.units[app]
                    units = (
                        float(round((5 + a) * dt * (1.0 + 0.8 * math.sin(t / 137_000 + a))))
                        if unit
                        else 0.0
                    )
                    score = (operational + embodied) / units if units > 0 else None
                    scis[app].append(
                        (
                            host,
                            app,
                            unit,
                            t,
                            dt,
                            energy_kwh,
                            gco2,
                            operational,
                            embodied,
                            units,
                            score,
                        )
                    )
                apps["_idle"].append(
                    (host, "_idle", t, idle[0], idle[1], idle[2], 0.0, sum(idle), 0.0)
                )
                apps["_unattributed"].append(
                    (host, "_unattributed", t, unattributed, 0.0, 0.0, 0.0, unattributed, 0.0)
                )
            yield "intervals", intervals
            yield "host_energy", [r for k in sorted(parts) for r in parts[k]]
            yield "app_energy", [r for k in sorted(apps) for r in apps[k]]
            yield "process_energy", procs
            yield "sci", [r for k in sorted(scis) for r in scis[k]]


_INSERT = {
    "intervals": "INSERT OR REPLACE INTO intervals VALUES (?,?,?,?,?,?,?)",
    "host_energy": "INSERT OR REPLACE INTO host_energy VALUES (?,?,?,?,?,?)",
    "app_energy": "INSERT OR REPLACE INTO app_energy VALUES (?,?,?,?,?,?,?,?,?)",
    "process_energy": (
        "INSERT OR REPLACE INTO process_energy (host, app, process, pid, ts_ms, joules, cpu_s)"
        " VALUES (?,?,?,?,?,?,?)"
    ),
    "sci": "INSERT OR REPLACE INTO sci VALUES (?,?,?,?,?,?,?,?,?,?,?)",
    "grid_intensity": "INSERT OR REPLACE INTO grid_intensity VALUES (?,?,?,?,?,?,?)",
}


def fill_store(path: str | Path, spec: SampleSpec) -> SampleInfo:
    """Write ``spec``'s rows into the store at ``path`` (created with the store's schema)."""
    store = SqliteStore(path, retention_days=36500)
    store.open()  # the exact schema
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    indexes = [
        n
        for (n,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND name LIKE '%_ts'"
        )
    ]
    for name in indexes:  # rebuilt once at the end: much faster than row by row
        db.execute(f"DROP INDEX {name}")
    db.execute("PRAGMA synchronous=OFF")
    count = 0
    for table, rows in generate(spec):
        db.execute("BEGIN")
        db.executemany(_INSERT[table], rows)
        db.execute("COMMIT")
        count += len(rows)
    db.close()
    store = SqliteStore(path, retention_days=36500)
    store.open()  # recreates the indexes
    store.close()
    info = plan(spec)
    return SampleInfo(**{**info.__dict__, "rows": count})


# -- InfluxDB -----------------------------------------------------------------------------


def _tag(text: str) -> str:
    """A tag key or value in line protocol: commas, equals signs and spaces escaped."""
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _series(measurement: str, **tags: str | None) -> str:
    head = measurement.replace(",", "\\,").replace(" ", "\\ ")
    for key in sorted(tags):
        value = tags[key]
        if value:
            head += f",{key}={_tag(value)}"
    return head


def lines(table: str, rows: Sequence[Row]) -> list[str]:
    """Rows of one store table → line protocol (ms), following ``exporters/points.py``."""
    out: list[str] = []
    heads: dict[tuple[object, ...], str] = {}

    def head(key: tuple[object, ...], measurement: str, **tags: Any) -> str:
        found = heads.get(key)
        if found is None:
            found = heads[key] = _series(measurement, **tags)
        return found

    if table == "host_energy":
        for host, comp, source, t, joules, watts in rows:
            h = head((host, comp, source), "host_energy", host=host, component=comp, source=source)
            out.append(f"{h} joules={joules!r},watts={watts!r} {t}")
    elif table == "app_energy":
        for host, app, t, cpu, dram, gpu, idle, total, cpu_s in rows:
            h = head((host, app), "app_energy", host=host, app=app)
            out.append(
                f"{h} cpu_j={cpu!r},dram_j={dram!r},gpu_j={gpu!r},idle_j={idle!r},"
                f"total_j={total!r},cpu_s={cpu_s!r} {t}"
            )
    elif table == "process_energy":
        for host, app, process, pid, t, joules, cpu_s in rows:
            h = head((host, app, process), "process_energy", host=host, app=app, process=process)
            out.append(f"{h} pid={pid}i,joules={joules!r},cpu_s={cpu_s!r},count=1i {t}")
    elif table == "sci":
        for host, app, unit, t, _dt, e, i, op, emb, units, score in rows:
            h = head((host, app, unit), "sci", host=host, app=app, unit=unit)
            tail = f",sci={score!r}" if score is not None else ""
            out.append(
                f"{h} energy_kwh={e!r},intensity={i!r},operational_g={op!r},"
                f"embodied_g={emb!r},units={units!r}{tail} {t}"
            )
    elif table == "grid_intensity":
        for zone, provider, t, gco2, signal, fallback, _dt in rows:
            h = head(
                (zone, provider, signal),
                "grid_intensity",
                zone=zone,
                provider=provider,
                signal=signal,
            )
            out.append(f"{h} gco2_per_kwh={gco2!r},fallback={'true' if fallback else 'false'} {t}")
    # "intervals" has no measurement in InfluxDB: the same facts are in app_energy
    return out


class InfluxWriter:
    """POSTs line protocol to ``/write`` (1.x API, ms precision) from a background thread."""

    def __init__(
        self,
        url: str,
        database: str,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        batch: int = 10_000,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.batch = batch
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        elif username:
            pair = f"{username}:{password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._queue: Queue[bytes | None] = Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def create_database(self) -> None:
        q = urllib.parse.urlencode({"q": f'CREATE DATABASE "{self.database}"'})
        req = urllib.request.Request(
            f"{self.url}/query",
            data=q.encode(),
            headers={**self.headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
        urllib.request.urlopen(req, timeout=30).read()

    def put(self, batch_lines: Sequence[str]) -> None:
        for k in range(0, len(batch_lines), self.batch):
            if self._error is not None:
                raise self._error
            self._queue.put("\n".join(batch_lines[k : k + self.batch]).encode())

    def _drain(self) -> None:
        params = urllib.parse.urlencode({"db": self.database, "precision": "ms"})
        while (body := self._queue.get()) is not None:
            for attempt in range(8):  # a busy server answers 5xx (cache full): back off
                try:
                    req = urllib.request.Request(
                        f"{self.url}/write?{params}", data=body, headers=self.headers
                    )
                    urllib.request.urlopen(req, timeout=300).read()
                    break
                except urllib.error.HTTPError as exc:
                    if exc.code < 500 or attempt == 7:
                        self._error = exc
                        break
                    time.sleep(0.5 * 2**attempt)
                except BaseException as exc:  # reported by put/close
                    self._error = exc
                    break

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def write_influx(
    url: str,
    database: str,
    spec: SampleSpec,
    token: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> SampleInfo:
    """Write ``spec``'s rows to InfluxDB (the database is created if missing)."""
    writer = InfluxWriter(url, database, token, username, password)
    writer.create_database()
    count = 0
    try:
        for table, rows in generate(spec):
            batch = lines(table, rows)
            writer.put(batch)
            count += len(batch)
    finally:
        writer.close()
    return SampleInfo(**{**plan(spec).__dict__, "rows": count})


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
