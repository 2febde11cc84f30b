"""The embedded SQLite store: rows per data model, top-N + other, idempotent, retention."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.attribution import attribute
from agent.records import ComponentReading, CpuActivity, IntervalResult, ProcessActivity
from exporters.sqlite_store import SqliteStore

NOW = datetime.now(UTC).replace(microsecond=0)


def interval(end: datetime = NOW, n_procs: int = 30) -> IntervalResult:
    procs = [
        ProcessActivity(i, i, f"p{i}", f"app{i % 3}", i, i << 20) for i in range(1, n_procs + 1)
    ]
    readings = [
        ComponentReading("cpu0", "cpu", "rapl", 50.0),
        ComponentReading("dram0", "dram", "rapl", 10.0),
    ]
    busy = sum(p.cpu_ticks for p in procs) + 10
    cpu = CpuActivity(busy, busy * 2, 2)
    return attribute("h1", end - timedelta(seconds=5), end, readings, cpu, procs, 1 << 34)


def open_store(tmp_path: Path, **kw) -> SqliteStore:
    store = SqliteStore(tmp_path / "sub" / "s.db", **kw)
    store.open()
    return store


def test_rows_follow_the_data_model_and_sum_to_the_measurement(tmp_path: Path) -> None:
    store = open_store(tmp_path, top_n=5)
    r = interval()
    store.write([r])
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (total, idle, unattributed, seconds) = db.execute(
        "SELECT total_j, idle_j, unattributed_j, interval_s FROM intervals"
    ).fetchone()
    assert math.isclose(total, 60.0) and seconds == 5.0
    comps = dict(db.execute("SELECT component, watts FROM host_energy"))
    assert comps == {"cpu0": 10.0, "dram0": 2.0}
    app_sum = db.execute("SELECT sum(total_j) FROM app_energy").fetchone()[0]
    assert math.isclose(app_sum, total)  # apps + _idle + _unattributed = measured
    assert {a for (a,) in db.execute("SELECT app FROM app_energy")} >= {"_idle", "_unattributed"}
    rows = db.execute(
        "SELECT process, pid, joules FROM process_energy ORDER BY joules DESC"
    ).fetchall()
    assert len(rows) == 18  # per app (app0, app1, app2): its top 5 and one "_other"
    assert [p for p, _, _ in rows].count("_other") == 3
    proc_sum = sum(j for _, _, j in rows)
    assert math.isclose(proc_sum, sum(p.joules for p in r.processes))
    assert math.isclose(proc_sum + idle + unattributed, total)
    store.close()


def test_replaying_an_interval_overwrites_it(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    r = interval()
    store.write([r])
    store.write([r, r])
    db = sqlite3.connect(store.path)
    for table in ("intervals", "host_energy"):
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == (
            1 if table == "intervals" else 2
        )
    store.close()


def test_retention_prunes_old_rows(tmp_path: Path) -> None:
    store = open_store(tmp_path, retention_days=1)
    store.write([interval(NOW - timedelta(days=3)), interval(NOW)])
    assert store.prune() > 0
    db = sqlite3.connect(store.path)
    assert db.execute("SELECT count(*) FROM intervals").fetchone()[0] == 1
    store.close()

