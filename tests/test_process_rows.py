"""Per-process rows bounded over time: a process that takes a fresh random name every
interval cannot grow the series of InfluxDB or the store past the daily cap, the rows
keep every joule, and names near the top's cut-off do not flap."""

from __future__ import annotations

import math
import random
import sqlite3
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.attribution import attribute
from agent.config import ConfigError, InfluxConfig, SpoolConfig, load, validate_influx
from agent.records import (
    ComponentReading,
    CpuActivity,
    IntervalResult,
    ProcessActivity,
    ProcessEnergy,
)
from devtools.servers import InfluxdServer
from exporters.influx_sink import build_influx_sink
from exporters.points import interval_points
from exporters.process_rows import (
    DEFAULT_MAX_NAMES_PER_DAY,
    OTHER,
    PERSIST,
    ProcessRow,
    ProcessRows,
)
from exporters.sqlite_store import SqliteStore

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a day that starts with the run
INTERVALS = 1000
CAP = DEFAULT_MAX_NAMES_PER_DAY  # 200


def churning(i: int, rng: random.Random) -> IntervalResult:
    """Interval ``i``: steady services, plus three busy processes of an unprivileged user
    that take fresh random names (and pids) every interval."""
    procs = [ProcessActivity(100 + k, 1, "nginx", "web", 20, 50 << 20) for k in range(4)]
    procs.append(ProcessActivity(200, 1, "postgres", "db", 30, 200 << 20))
    procs.append(ProcessActivity(300, 1, "bash", "other", 1, 4 << 20))
    for k in range(3):
        name = f"x{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
        procs.append(ProcessActivity(10_000 + 3 * i + k, i, name, "other", 60, 1 << 20))
    end = T0 + timedelta(seconds=5 * (i + 1))
    busy = sum(p.cpu_ticks for p in procs) + 5
    readings = [
        ComponentReading("cpu0", "cpu", "rapl", 200.0),
        ComponentReading("dram0", "dram", "rapl", 20.0),
    ]
    cpu = CpuActivity(busy, 2 * busy, 4)
    return attribute("h1", end - timedelta(seconds=5), end, readings, cpu, procs, 16 << 30)


def results() -> list[IntervalResult]:
    rng = random.Random(16)
    return [churning(i, rng) for i in range(INTERVALS)]


def v1_config(server: InfluxdServer, db: str) -> InfluxConfig:
    cfg = InfluxConfig(
        enabled=True,
        url=server.url,
        api="v1",
        database=db,
        username=server.username,
        password=server.password,
        timeout_s=5.0,
    )
    validate_influx(cfg)
    return cfg


def assert_rows_keep_the_energy(
    rows_by_time: dict[int, list[tuple[str, str, float]]], sent: list[IntervalResult]
) -> None:
    """Each interval's rows sum to its processes' joules."""
    assert len(rows_by_time) == len(sent)
    for r in sent:
        t = round(r.end.timestamp() * 1000)
        got = sum(j for _, _, j in rows_by_time[t])
        assert math.isclose(got, sum(p.joules for p in r.processes), rel_tol=1e-9), t


def test_name_churn_stays_under_the_cap_in_influxdb(influxd: InfluxdServer, tmp_path: Path) -> None:
    db = f"t_{uuid.uuid4().hex[:10]}"
    influxd.create_database(db)
    sink = build_influx_sink(v1_config(influxd, db), SpoolConfig(dir=str(tmp_path / "spool")))
    sent = results()
    sink.open()
    for r in sent:
        sink.write([r])
    sink.close()
    assert sink.runner.backlog_lines == 0
    series = influxd.rows('SHOW SERIES FROM "process_energy"', db)
    # 3 fresh names an interval: 3,000 series before the cap
    assert 0 < len(series) <= CAP, len(series)
    rows = influxd.rows('SELECT "app", "process", "joules" FROM "process_energy"', db)
    by_time: dict[int, list[tuple[str, str, float]]] = defaultdict(list)
    for row in rows:
        by_time[row["time"]].append((row["app"], row["process"], row["joules"]))
    assert_rows_keep_the_energy(by_time, sent)
    # the services of other apps kept their own series every interval
    for t, found in by_time.items():
        assert {("web", "nginx"), ("db", "postgres")} <= {(a, p) for a, p, _ in found}, t
    # once the cap is reached, newcomers go to _other and the user's shell is back in the top
    last = {(a, p) for a, p, _ in by_time[max(by_time)]}
    assert {("other", OTHER), ("other", "bash")} <= last


def test_name_churn_stays_under_the_cap_in_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", retention_days=36500)
    store.open()
    sent = results()
    for r in sent:
        store.write([r])
    store.close()
    db = sqlite3.connect(tmp_path / "s.db")
    (names,) = db.execute(
        "SELECT count(*) FROM (SELECT DISTINCT app, process FROM process_energy)"
    ).fetchone()
    assert 0 < names <= CAP, names  # 3,000 names before the cap
    by_time: dict[int, list[tuple[str, str, float]]] = defaultdict(list)
    for ts, app, process, joules in db.execute(
        "SELECT ts_ms, app, process, joules FROM process_energy"
    ):
        by_time[ts].append((app, process, joules))
    db.close()
    assert_rows_keep_the_energy(by_time, sent)


def test_the_store_and_influxdb_hold_the_same_rows(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", retention_days=36500, top_n=2)
    store.open()
    rows = ProcessRows(top_n=2)
    sent = results()[:50]
    points = []
    for r in sent:
        store.write([r])
        points += [p for p in interval_points(r, 2, rows) if p.measurement == "process_energy"]
    store.close()
    db = sqlite3.connect(tmp_path / "s.db")
    stored = sorted(db.execute("SELECT ts_ms, app, process, pid, joules FROM process_energy"))
    db.close()
    influx = sorted(
        (
            p.time_ms,
            dict(p.tags)["app"],
            dict(p.tags)["process"],
            dict(p.fields)["pid"],
            dict(p.fields)["joules"],
        )
        for p in points
    )
    assert stored == influx


# -- the rules, on ProcessRows alone --------------------------------------------------------


def energy(pid: int, name: str, app: str, joules: float) -> ProcessEnergy:
    return ProcessEnergy(pid, name, app, joules / 10, joules, 0.0, 0.0)


def named(rows: list[ProcessRow]) -> set[str]:
    return {r.process for r in rows if r.process != OTHER}


def at(i: int) -> datetime:
    return T0 + timedelta(seconds=5 * (i + 1))


def test_a_newcomer_needs_a_margin_or_to_persist() -> None:
    sel = ProcessRows(top_n=2)
    steady = [energy(1, "a", "app", 10.0), energy(2, "b", "app", 8.0)]
    for i in range(20):
        assert named(sel.rows("h", at(i), steady)) == {"a", "b"}
    # c is above b (8) but not by the margin (×1.5): it must stay above for PERSIST intervals
    n = PERSIST + 3
    seen = [
        named(sel.rows("h", at(20 + i), [*steady, energy(3, "c", "app", 9.0)])) for i in range(n)
    ]
    assert seen[: PERSIST - 1] == [{"a", "b"}] * (PERSIST - 1)
    assert seen[PERSIST - 1 :] == [{"a", "c"}] * (n - PERSIST + 1)
    # d beats the weakest by the margin: it is in at once
    got = named(
        sel.rows("h", at(40), [*steady, energy(3, "c", "app", 9.0), energy(4, "d", "app", 30.0)])
    )
    assert "d" in got and len(got) == 2


def test_names_near_the_cut_off_do_not_flap() -> None:
    sel = ProcessRows(top_n=3)
    rng = random.Random(3)
    changes, before = 0, None
    for i in range(500):
        procs = [energy(k + 1, f"w{k}", "app", 10.0 + rng.uniform(-2, 2)) for k in range(6)]
        now = named(sel.rows("h", at(i), procs))
        changes += before is not None and now != before
        before = now
    assert changes <= 5, changes  # versus a change nearly every interval for a plain top 3


def test_the_cap_counts_every_series_and_resets_each_utc_day() -> None:
    sel = ProcessRows(top_n=5, max_names=10)
    series: set[tuple[str, str]] = set()
    for i in range(200):
        procs = [energy(i * 10 + k, f"n{i}-{k}", f"app{k % 3}", 5.0 + k) for k in range(4)]
        series |= {(r.app, r.process) for r in sel.rows("h", at(i), procs)}
    assert len(series) == 10
    tomorrow = T0 + timedelta(days=1, seconds=5)
    fresh = sel.rows("h", tomorrow, [energy(1, "new", "app0", 50.0)])
    assert named(fresh) == {"new"}


@pytest.mark.parametrize("seed", range(20))
def test_rows_keep_joules_cpu_time_and_count(seed: int) -> None:
    rng = random.Random(seed)
    sel = ProcessRows(top_n=rng.randint(0, 4), max_names=rng.randint(1, 30))
    for i in range(30):
        procs = [
            ProcessEnergy(
                pid,
                rng.choice(["a", "b", "c", f"r{rng.random()}"]),
                rng.choice(["x", "y", "z"]),
                rng.uniform(0, 3),
                rng.choice([0.0, rng.uniform(0, 50)]),
                rng.uniform(0, 5),
                0.0,
            )
            for pid in range(1, rng.randint(0, 25) + 1)
        ]
        rows = sel.rows("h", at(i), procs)
        assert math.isclose(sum(r.joules for r in rows), sum(p.joules for p in procs))
        assert math.isclose(sum(r.cpu_s for r in rows), sum(p.cpu_s for p in procs))
        assert sum(r.count for r in rows) == len(procs)
        assert len({r.pid for r in rows}) == len(rows)  # unique: the store's key holds


def test_the_config_key_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("max_process_names_per_day = 0\n")
    with pytest.raises(ConfigError, match="max_process_names_per_day: must be 1 or more"):
        load(path)
    path.write_text("max_process_names_per_day = 50\n")
    assert load(path).max_process_names_per_day == 50


def test_bad_limits_are_named() -> None:
    with pytest.raises(ValueError, match="max_process_names_per_day"):
        ProcessRows(max_names=0)
    with pytest.raises(ValueError, match="top_processes"):
        ProcessRows(top_n=-1)
