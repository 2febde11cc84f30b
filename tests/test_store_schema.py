"""One data model: points.py's flattening is what both backends hold, the store's schema
has a table for each measurement, version 1 stores open upgraded, and adding a
measurement is one function plus one table."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from agent.attribution import attribute
from agent.config import Config, InfluxConfig, SpoolConfig
from agent.records import (
    ComponentReading,
    CpuActivity,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
    RemoteInference,
    SciRecord,
)
from agent.scoring import with_remote
from dashboard.data.base import COLUMNS
from dashboard.data.influx_source import InfluxClient, InfluxSource
from dashboard.data.sqlite_source import SqliteSource
from dashboard.timerange import TimeRange
from devtools.servers import InfluxdServer
from exporters import points, store_schema
from exporters.influx_sink import build_influx_sink
from exporters.points import Point, flatten, interval_points
from exporters.process_rows import ProcessRow, ProcessRows
from exporters.sqlite_store import SqliteStore
from exporters.store_reader import open_reader

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def interval(i: int, host: str = "h1") -> IntervalResult:
    """Interval ``i`` (5 s each from T0): more processes than a top 2 keeps, a unit-less
    app with no score, an intensity, a backslash in a process name and AI calls."""
    procs = [ProcessActivity(100 + k, 1, f"w{k % 5}", "web", 10 + k + i % 7, 1 << 20)
             for k in range(12)]  # fmt: skip
    procs += [ProcessActivity(300 + k, 1, "db\\01", "db", 30 + k, 8 << 20) for k in range(2)]
    procs.append(ProcessActivity(400, 1, f"job{i % 4}", "batch", 5, 1 << 20))
    busy = sum(p.cpu_ticks for p in procs) + 9
    end = T0 + timedelta(seconds=5 * (i + 1))
    readings = [
        ComponentReading("cpu0", "cpu", "rapl", 120.0 + i, None, 40.0, "learned"),
        ComponentReading("dram0", "dram", "rapl", 12.0),
    ]
    r = attribute(host, end - timedelta(seconds=5), end, readings,
                  CpuActivity(busy, 3 * busy, 4), procs, 1 << 34)  # fmt: skip
    return replace(
        r,
        intensity=IntensityValue("FR", 50.0 + i, "static", "average", end, fallback=i % 3 == 0),
        sci=(
            SciRecord("web", "request", 10.0, 1e-5, 50.0 + i, 5e-4, 1e-4, 6e-5),
            SciRecord("batch", None, 0.0, 2e-6, 50.0 + i, 1e-4, 1e-5, None),
        ),
        remote=(
            RemoteInference("web", "openai", "gpt-4o-mini", 10, 4, 400, 1200, 0, 1e-3, 9e-4,
                            1.1e-3, 0.4, 0.1, "USA", 384.4, "EcoLogits 0.11.3 llm_impacts"),
        ),
    )


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path)
    try:
        yield db
        db.commit()
    finally:
        db.close()


def test_every_point_has_a_table_with_its_columns(tmp_path: Path) -> None:
    r = interval(0)
    rows = ProcessRows(top_n=2).rows(r.host, r.end, r.processes)
    flat = flatten(r, rows)
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    store.close()
    with connect(tmp_path / "s.db") as db:
        for p in flat:
            names = {k for k, _ in (*p.tags, *p.fields, *p.local)} | {"ts_ms"}
            assert names <= set(store_schema.columns(db, p.measurement)), p.measurement
    assert {p.measurement for p in flat} == {m.__name__ for m in points.MEASUREMENTS}
    # InfluxDB gets every point but the store's own (intervals), without local fields
    sent = interval_points(r, rows=ProcessRows(top_n=2))
    assert [p.measurement for p in sent] == [p.measurement for p in flat if p.fields]
    assert all("interval_s" not in p.to_line() for p in sent)


def test_the_store_holds_the_flattened_rows_as_they_are(tmp_path: Path) -> None:
    """Each table row is its point: tags, fields and local fields by column name."""
    results = [interval(i) for i in range(3)]
    store = SqliteStore(tmp_path / "s.db", top_n=2)
    store.open()
    store.write(results)
    store.close()
    selector = ProcessRows(top_n=2)
    expected = [p for r in results for p in flatten(r, selector.rows(r.host, r.end, r.processes))]
    with connect(tmp_path / "s.db") as db:
        for p in expected:
            cols = [k for k, _ in (*p.tags, *p.fields, *p.local)]
            keys = [k for k, _ in p.tags]
            where = " AND ".join(f"{k} = ?" for k in [*keys, "ts_ms"])
            got = db.execute(
                f"SELECT {', '.join(cols)} FROM {p.measurement} WHERE {where}",
                (*(v for _, v in p.tags), p.time_ms),
            ).fetchall()
            want = tuple(v for _, v in (*p.tags, *p.fields, *p.local))
            assert got == [want], p
        units = db.execute("SELECT app, unit, sci FROM sci ORDER BY app, ts_ms LIMIT 1").fetchone()
        assert units == ("batch", None, None)  # no unit, no score: NULL, as before


def test_the_store_and_influxdb_hold_the_same_process_rows(
    influxd: InfluxdServer, tmp_path: Path
) -> None:
    """Written by the agent's two sinks (top 2 per app), the process rows are the same
    (key, pid, joules, CPU time, count), and the dashboard's process tables agree."""
    results = [interval(i) for i in range(40)]
    store = SqliteStore(tmp_path / "s.db", top_n=2)
    store.open()
    store.write(results)
    store.close()
    database = "same_rows"
    influxd.create_database(database)
    cfg = InfluxConfig(enabled=True, url=influxd.url, api="v1", database=database,
                       username=influxd.username, password=influxd.password, top_processes=2)
    sink = build_influx_sink(cfg, SpoolConfig(dir=str(tmp_path / "spool")))  # fmt: skip
    sink.open()
    sink.write(results)
    sink.close()
    assert sink.runner.backlog_lines == 0
    with connect(tmp_path / "s.db") as db:
        stored = sorted(
            db.execute("SELECT ts_ms, app, process, pid, joules, cpu_s, count FROM process_energy")
        )
    influx = sorted(
        (row["time"], row["app"], row["process"], row["pid"], row["joules"], row["cpu_s"],
         row["count"])
        for row in influxd.rows('SELECT * FROM "process_energy"', database)
    )  # fmt: skip
    assert len(stored) > 40 * 4  # web's top 2 + _other, db, batch's rows, every interval
    assert {(a, p) for _, a, p, *_ in stored} >= {("web", "_other"), ("db", "db\\01")}
    assert stored == influx
    rng = TimeRange(int(T0.timestamp() * 1000), int(T0.timestamp() * 1000) + 600_000, 60_000)
    client = InfluxClient(influxd.url, database, username=influxd.username,
                          password=influxd.password)  # fmt: skip
    a = SqliteSource(tmp_path / "s.db").top_processes("h1", rng, n=50)
    b = InfluxSource(client).top_processes("h1", rng, n=50)
    key = ["app", "process"]
    pd.testing.assert_frame_equal(
        a.sort_values(key).reset_index(drop=True),
        b.sort_values(key).reset_index(drop=True),
        check_dtype=False,
        rtol=1e-9,
    )


V1_PROCESS_ENERGY = """
CREATE TABLE process_energy (
    host TEXT NOT NULL, app TEXT NOT NULL, process TEXT NOT NULL, pid INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL, joules REAL NOT NULL, cpu_s REAL NOT NULL,
    PRIMARY KEY (host, ts_ms, pid)) WITHOUT ROWID;
"""


def test_a_version_1_store_reads_as_is_and_opens_upgraded(tmp_path: Path) -> None:
    """Rows keyed by pid (two ``python`` processes of one app in one interval, as before
    process rows were grouped by name) read as they are, before and after the writer
    opens the file and adds ``count``; new rows go in beside them."""
    path = tmp_path / "old.db"
    t = int(T0.timestamp() * 1000)
    with connect(path) as db:
        db.executescript(V1_PROCESS_ENERGY)
        db.executescript(store_schema.SCHEMA)  # the other tables, unchanged since version 1
        db.executemany(
            "INSERT INTO process_energy VALUES (?,?,?,?,?,?,?)",
            [
                ("h1", "ml", "python", 11, t, 30.0, 3.0),
                ("h1", "ml", "python", 12, t, 50.0, 4.0),
                ("h1", "web", "nginx", 20, t, 7.0, 1.0),
                ("h1", "ml", "python", 11, t + 5000, 9.0, 1.0),
            ],
        )
        db.execute(
            "INSERT INTO app_energy VALUES ('h1', 'ml', ?, 80.0, 0.0, 0.0, 2.5, 82.5, 7.0)", (t,)
        )
        db.execute("PRAGMA user_version=1")
    rng = TimeRange(t - 60_000, t + 60_000, 60_000)
    before = SqliteSource(path).top_processes("h1", rng, n=10)
    assert before.loc[before["process"] == "python", "joules"].item() == pytest.approx(89.0)

    store = SqliteStore(path, retention_days=36500)
    store.open()
    new = interval(0, host="h2")
    store.write([new, new])  # the upgraded table takes new rows; a replay overwrites them
    store.close()
    with connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (store_schema.SCHEMA_VERSION,)
        assert "count" in store_schema.columns(db, "process_energy")
        rows = db.execute(
            "SELECT ts_ms, app, process, pid, joules, cpu_s, count FROM process_energy"
            " WHERE host = 'h1' ORDER BY ts_ms, app, pid"
        ).fetchall()
        idle_j = db.execute("SELECT idle_j FROM app_energy WHERE host = 'h1'").fetchone()
        written = db.execute("SELECT sum(count) FROM process_energy WHERE host = 'h2'")
        assert written.fetchone() == (len(new.processes),)
    assert rows == [  # kept as written; count unknown
        (t, "ml", "python", 11, 30.0, 3.0, None),
        (t, "ml", "python", 12, 50.0, 4.0, None),
        (t, "web", "nginx", 20, 7.0, 1.0, None),
        (t + 5000, "ml", "python", 11, 9.0, 1.0, None),
    ]
    assert idle_j == (2.5,)  # other tables untouched
    after = SqliteSource(path).top_processes("h1", rng, n=10)
    pd.testing.assert_frame_equal(before, after)


def remote_calls(r: IntervalResult, _: object, t: int) -> Iterator[Point]:
    """A stand-in for a new per-app measurement (as ``remote_inference`` will be)."""
    for s in r.sci:
        yield Point("remote_calls", (("host", r.host), ("app", s.app)), (("calls", 3),), t)


def test_adding_a_measurement_is_one_function_and_one_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(points, "MEASUREMENTS", (*points.MEASUREMENTS, remote_calls))
    table = """
CREATE TABLE IF NOT EXISTS remote_calls (
    host TEXT NOT NULL, app TEXT NOT NULL, ts_ms INTEGER NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (host, app, ts_ms)) WITHOUT ROWID;
"""
    monkeypatch.setattr(store_schema, "SCHEMA", store_schema.SCHEMA + table)
    r = interval(0)
    store = SqliteStore(tmp_path / "s.db", retention_days=36500)
    store.open()
    store.write([r])
    assert store.prune() == 0  # its table is pruned with the others
    store.close()
    with connect(tmp_path / "s.db") as db:
        assert sorted(db.execute("SELECT app, calls FROM remote_calls")) == [
            ("batch", 3),
            ("web", 3),
        ]
    lines = [p.to_line() for p in interval_points(r)]
    assert sum(line.startswith("remote_calls,") for line in lines) == 2


def test_readers_see_no_rows_in_tables_a_store_lacks(tmp_path: Path) -> None:
    """A store written before a table existed reads as empty there, not as an error."""
    path = tmp_path / "bare.db"
    with connect(path) as db:
        db.execute("CREATE TABLE unrelated (x)")
    with open_reader(path) as store:
        assert store.interval_count() == 0
        assert store.runs("") == []
        assert store.methods("h1", 10**13) == []
        assert store.process_totals("h1", TimeRange(0, 10**13, 10**12)) == []


def test_process_rows_reach_the_store_with_their_count(tmp_path: Path) -> None:
    r = interval(0)
    rows: list[ProcessRow] = ProcessRows(top_n=2).rows(r.host, r.end, r.processes)
    store = SqliteStore(tmp_path / "s.db", top_n=2)
    store.open()
    store.write([r])
    store.close()
    with connect(tmp_path / "s.db") as db:
        stored = dict(
            ((a, p), c) for a, p, c in db.execute("SELECT app, process, count FROM process_energy")
        )
    assert stored == {(x.app, x.process): x.count for x in rows}
    assert sum(stored.values()) == len(r.processes)


def scored(i: int, host: str) -> IntervalResult:
    """``interval(i)`` with calls varying by interval and host, scored as the agent does:
    web's ``sci`` row carries ``remote_g`` (its calls' carbon) and a score that includes it."""
    r = interval(i, host)
    calls = 10 + i % 3 + (host == "h2")
    remote = (
        RemoteInference("web", "openai", "gpt-4o-mini", calls, i % 4, 40 * calls, 120 * calls, 0,
                        1e-4 * calls, 9e-5 * calls, 1.1e-4 * calls, 0.04 * calls, 0.01 * calls,
                        "USA", 384.4, "EcoLogits 0.11.3 llm_impacts"),
    )  # fmt: skip
    local = tuple(replace(s, sci=(s.operational_g + s.embodied_g) / s.units if s.units else None)
                  for s in r.sci)  # fmt: skip
    return replace(r, sci=tuple(with_remote(local, remote)), remote=remote)


def test_both_sources_read_the_same_remote_calls_and_sci_with_them(
    influxd: InfluxdServer, tmp_path: Path
) -> None:
    """Intervals with AI calls on two hosts, written by the agent's two sinks: the store
    and InfluxDB give the same remote calls per bucket and the same SCI series (which
    include ``remote_g``; batch, with no calls, has 0), whole and filtered by host; the
    period's SCI is the report's."""
    results = [scored(i, host) for i in range(40) for host in ("h1", "h2")]
    store = SqliteStore(tmp_path / "s.db", top_n=2)
    store.open()
    store.write(results)
    store.close()
    database = "same_remote"
    influxd.create_database(database)
    cfg = InfluxConfig(enabled=True, url=influxd.url, api="v1", database=database,
                       username=influxd.username, password=influxd.password, top_processes=2)
    sink = build_influx_sink(cfg, SpoolConfig(dir=str(tmp_path / "spool")))  # fmt: skip
    sink.open()
    sink.write(results)
    sink.close()
    assert sink.runner.backlog_lines == 0
    t0 = int(T0.timestamp() * 1000)
    rng = TimeRange(t0, t0 + 600_000, 60_000)
    client = InfluxClient(influxd.url, database, username=influxd.username,
                          password=influxd.password)  # fmt: skip
    a, b = SqliteSource(tmp_path / "s.db"), InfluxSource(client)
    for hosts in (None, ["h1"]):
        remote = a.remote_over_time(hosts, "web", rng)
        assert list(remote.columns) == list(COLUMNS["remote_over_time"])
        pd.testing.assert_frame_equal(
            remote, b.remote_over_time(hosts, "web", rng), check_dtype=False, rtol=1e-9
        )
        on = [x for r in results if hosts is None or r.host in hosts for x in r.remote]
        assert remote["calls"].sum() == sum(x.calls for x in on)
        assert remote["usage_g"].sum() == pytest.approx(sum(x.usage_g for x in on))
        series = a.sci_over_time(hosts, None, rng)
        pd.testing.assert_frame_equal(
            series, b.sci_over_time(hosts, None, rng), check_dtype=False, rtol=1e-9
        )
        pd.testing.assert_frame_equal(
            a.app_totals(hosts, rng), b.app_totals(hosts, rng), check_dtype=False, rtol=1e-9
        )
        web = series[series["app"] == "web"]
        assert web["remote_g"].sum() == pytest.approx(sum(x.carbon_g for x in on))
        assert (series.loc[series["app"] == "batch", "remote_g"] == 0).all()
    assert a.remote_over_time(None, "batch", rng).empty
    assert b.remote_over_time(None, "batch", rng).empty
    assert a.remote_over_time([], "web", rng).empty and b.remote_over_time([], "web", rng).empty
    # the period's SCI (the Application page's headline) is the report's, remote included
    web = a.sci_over_time(None, ["web"], rng)
    headline = web["carbon_g"].sum() / web["units"].sum()
    report = a.sci_report(Config(), "web", rng.start_ms, rng.end_ms)
    assert report.remote and report.remote["carbon_g"] == pytest.approx(web["remote_g"].sum())
    assert report.sci_g_per_unit == pytest.approx(headline, rel=1e-12)
    local = (web["operational_g"].sum() + web["embodied_g"].sum()) / web["units"].sum()
    assert headline > local * 1.5  # the calls weigh: a local-only SCI would be far off
    # each stored score is (local + remote) / units, as the rows say
    with connect(tmp_path / "s.db") as db:
        for sci, op, emb, remote_g, units in db.execute(
            "SELECT sci, operational_g, embodied_g, remote_g, units FROM sci WHERE app = 'web'"
        ):
            assert sci == pytest.approx((op + emb + remote_g) / units)
        assert not db.execute(
            "SELECT count(*) FROM sci WHERE app = 'batch' AND remote_g IS NOT NULL"
        ).fetchone()[0]


def test_a_store_from_before_remote_g_reads_it_as_zero(tmp_path: Path) -> None:
    """A read-only store whose ``sci`` table predates ``remote_g`` (schema version 2) reads
    its SCI as local only, and no remote calls."""
    path = tmp_path / "v2.db"
    t = int(T0.timestamp() * 1000)
    with connect(path) as db:
        db.executescript(store_schema.SCHEMA.replace(
            "    remote_g REAL, remote_energy_kwh REAL,  -- the app's AI calls (NULL: none); sci"
            " has them\n", ""))  # fmt: skip
        assert "remote_g" not in store_schema.columns(db, "sci")
        db.execute(
            "INSERT INTO sci VALUES ('h1', 'web', 'request', ?, 5, 1e-5, 50, 5e-4, 1e-4, 10, 6e-5)",
            (t,),
        )
    rng = TimeRange(t - 60_000, t + 60_000, 60_000)
    df = SqliteSource(path).sci_over_time(None, None, rng)
    assert df["remote_g"].tolist() == [0.0]
    assert df["sci"].tolist() == [pytest.approx(6e-5)]
    assert SqliteSource(path).remote_over_time(None, "web", rng).empty


def test_the_influxdb_report_counts_the_remote_calls_as_the_store_report(
    influxd: InfluxdServer, tmp_path: Path
) -> None:
    """The report from InfluxDB has the same remote calls, carbon and SCI as the store's."""
    results = [scored(i, host) for i in range(12) for host in ("h1", "h2")]
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    store.write(results)
    store.close()
    database = "same_report"
    influxd.create_database(database)
    cfg = InfluxConfig(enabled=True, url=influxd.url, api="v1", database=database,
                       username=influxd.username, password=influxd.password)  # fmt: skip
    sink = build_influx_sink(cfg, SpoolConfig(dir=str(tmp_path / "spool")))
    sink.open()
    sink.write(results)
    sink.close()
    client = InfluxClient(influxd.url, database, username=influxd.username,
                          password=influxd.password)  # fmt: skip
    t0 = int(T0.timestamp() * 1000)
    a = SqliteSource(tmp_path / "s.db").sci_report(Config(), "web", t0, t0 + 600_000)
    b = InfluxSource(client).sci_report(Config(), "web", t0, t0 + 600_000)
    assert a.remote and a.remote["calls"] == sum(x.calls for r in results for x in r.remote)
    assert b.remote.keys() == a.remote.keys()
    for key, value in a.remote.items():
        if key == "models":
            assert b.remote["models"] == [pytest.approx(m) for m in value]
        else:
            assert b.remote[key] == pytest.approx(value, rel=1e-9), key
    assert a.sci_g_per_unit is not None and b.sci_g_per_unit is not None
    assert b.sci_g_per_unit == pytest.approx(a.sci_g_per_unit, rel=1e-9)
    assert b.carbon_g == pytest.approx(a.carbon_g, rel=1e-9)
    batch = InfluxSource(client).sci_report(Config(), "batch", t0, t0 + 600_000)
    assert batch.remote == {}
