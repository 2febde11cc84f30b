"""The embedded SQLite store: rows per data model, top-N + other, idempotent, retention;
corrupt files moved aside, a store that cannot open retried, a full disk survived."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.attribution import attribute
from agent.loop import Loop
from agent.records import ComponentReading, CpuActivity, IntervalResult, ProcessActivity
from exporters.memory import MemorySink
from exporters.sqlite_store import SqliteStore, StoreError
from tests.tmpfs import fill, remount, small_tmpfs

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


# -- faults: a corrupt file, a store that cannot be opened, a full disk -----------------


def make_store_file(path: Path, n: int = 200) -> None:
    """A healthy store of ``n`` intervals at ``path``, closed (no -wal left)."""
    store = SqliteStore(path, retention_days=36500)
    store.open()
    store.write([interval(NOW - timedelta(seconds=5 * i), n_procs=5) for i in range(n)])
    store.close()


def corrupt_random(path: Path) -> None:
    path.write_bytes(os.urandom(64 << 10))


def corrupt_text(path: Path) -> None:
    path.write_text("[store]\npath = 'oops, a config file'\n" * 100)


def corrupt_page(path: Path) -> None:
    make_store_file(path)
    with path.open("r+b") as f:  # garbage over pages 6 to 8 (of ~40): headers intact
        f.seek(5 * 4096)
        f.write(os.urandom(3 * 4096))


def corrupt_truncated(path: Path) -> None:
    make_store_file(path)
    os.truncate(path, path.stat().st_size // 2)


def corrupt_with_wal(path: Path) -> None:
    """A corrupt database left with its -wal and -shm, as a crash leaves them."""
    work = path.parent / "work"
    work.mkdir()
    make_store_file(work / "s.db")
    live = SqliteStore(work / "s.db")
    live.open()
    live.write([interval(NOW + timedelta(seconds=5))])
    for suffix in ("", "-wal", "-shm"):
        shutil.copyfile(work / f"s.db{suffix}", path.with_name(path.name + suffix))
    live.close()
    with path.open("r+b") as f:
        f.seek(2 * 4096)
        f.write(os.urandom(20 * 4096))


def count(path: Path, sql: str = "SELECT count(*) FROM intervals") -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute(sql).fetchone()[0])


@pytest.mark.parametrize(
    "corrupt", [corrupt_random, corrupt_text, corrupt_page, corrupt_truncated, corrupt_with_wal]
)
def test_a_corrupt_store_is_moved_aside_and_a_fresh_one_used(
    tmp_path: Path, corrupt: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    corrupt(path)
    files = {p.name: p.read_bytes() for p in tmp_path.glob("s.db*")}
    store = SqliteStore(path)
    with caplog.at_level(logging.ERROR, logger="sci_agent.store"):
        store.open()  # does not raise
    (aside,) = store.moved_aside
    assert aside.name.startswith("s.db.corrupt-") and aside.name.endswith("Z")
    for name, data in files.items():  # every file kept under the new name, the data as is
        kept = aside.with_name(aside.name + name.removeprefix("s.db"))
        assert kept.read_bytes() == data or name.endswith("-shm")  # -shm: an index, rebuilt
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(path) in line and str(aside) in line and "corrupt (" in line
    assert "(SQLITE_CORRUPT" in line or "(SQLITE_NOTADB" in line or "(quick_check: Page" in line
    store.write([interval()])
    store.close()
    assert count(path) == 1  # the fresh store works
    assert not path.with_name("s.db-wal").exists() or count(path) == 1


def test_a_wal_with_no_valid_header_is_moved_aside_and_the_database_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    make_store_file(path, n=20)
    garbage = os.urandom(8192)
    path.with_name("s.db-wal").write_bytes(garbage)
    store = SqliteStore(path, retention_days=36500)
    with caplog.at_level(logging.ERROR, logger="sci_agent.store"):
        store.open()
    (aside,) = store.moved_aside
    assert aside.name.startswith("s.db-wal.corrupt-") and aside.read_bytes() == garbage
    assert "write-ahead log" in caplog.text and str(aside) in caplog.text
    store.write([interval(NOW + timedelta(seconds=5))])
    store.close()
    assert count(path) == 21  # the history is kept


def test_a_store_that_cannot_be_opened_is_retried_and_other_sinks_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "var"
    blocker.write_text("a file where the store's folder should be")
    store = SqliteStore(blocker / "s.db")
    memory = MemorySink()
    results = iter([interval(NOW + timedelta(seconds=5 * i), n_procs=3) for i in range(6)])
    loop = Loop(lambda: next(results), [store, memory], 5)
    with caplog.at_level(logging.INFO):
        store.open()  # logs, does not raise
        for _ in range(3):
            loop.run_cycle()
        assert len(memory.intervals) == 3 and store.backlog == 3
        blocker.unlink()  # fixed: the next cycle opens the store
        for _ in range(3):
            loop.run_cycle()
    assert store.backlog == 0 and store.error is None
    store.close()
    assert count(blocker / "s.db") == 6 and len(memory.intervals) == 6
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2  # the open at start, then the loop's once per distinct error
    assert all(str(blocker / "s.db") in e and "cannot use it" in e for e in errors)
    assert "wrote the 3 interval(s) kept in memory, dropped 0" in caplog.text


def test_a_read_only_store_is_named_and_written_when_writable_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        make_store_file(fs / "s.db", n=1)
        remount(fs, "ro")
        store = SqliteStore(fs / "s.db", retention_days=36500)
        with caplog.at_level(logging.ERROR, logger="sci_agent.store"):
            store.open()
        assert str(fs / "s.db") in caplog.text and "SQLITE_" in caplog.text
        assert "is on a read-only file system" in caplog.text
        with pytest.raises(StoreError, match="keeping up to"):
            store.write([interval(NOW + timedelta(seconds=5))])
        remount(fs, "rw")
        store.write([interval(NOW + timedelta(seconds=10))])
        store.close()
        assert count(fs / "s.db") == 3
        assert not list(fs.glob("*.corrupt-*"))  # not corrupt: nothing moved aside


@pytest.mark.parametrize(("bound", "dropped"), [(1000, 0), (10, 20)])
def test_a_full_disk_is_named_keeps_the_intervals_and_recovers(
    tmp_path: Path, bound: int, dropped: int, caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        store = SqliteStore(fs / "s.db", backlog_intervals=bound)
        store.open()
        results = [interval(NOW + timedelta(seconds=5 * i), n_procs=8) for i in range(40)]
        feed = iter(results)
        loop = Loop(lambda: next(feed), [store], 5)
        for _ in range(5):
            loop.run_cycle()
        filler = fill(fs)
        with caplog.at_level(logging.INFO):
            for _ in range(30):
                loop.run_cycle()
            assert store.backlog == min(30, bound)
            filler.unlink()
            for _ in range(5):
                loop.run_cycle()
        store.close()
        written = count(fs / "s.db")
        ends = {round(r.end.timestamp() * 1000) for r in results}
        with contextlib.closing(sqlite3.connect(fs / "s.db")) as db:
            stored = {ts for (ts,) in db.execute("SELECT ts_ms FROM intervals")}
    assert written == 40 - dropped and store.dropped_intervals == dropped
    lost = sorted(ends - stored)
    assert lost == sorted(ends)[5 : 5 + dropped]  # the oldest of the outage, exactly
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "disk full (SQLITE_FULL" in errors[0] and str(fs / "s.db") in errors[0]
    assert "rollback" not in caplog.text
    assert f"wrote the {min(30, bound)} interval(s) kept in memory, dropped {dropped}" in (
        caplog.text
    )


def test_intervals_kept_in_memory_are_stored_as_if_written_at_once(tmp_path: Path) -> None:
    results = [interval(NOW + timedelta(seconds=5 * i), n_procs=40) for i in range(4)]
    direct = SqliteStore(tmp_path / "direct.db", top_n=5)
    direct.open()
    direct.write(results)
    direct.close()
    blocker = tmp_path / "var"
    blocker.write_text("not a folder")
    late = SqliteStore(blocker / "late.db", top_n=5)
    late.open()
    for r in results[:3]:
        with pytest.raises(StoreError):
            late.write([r])
    blocker.unlink()
    late.write(results[3:])
    late.close()
    sql = "SELECT * FROM process_energy ORDER BY ts_ms, pid"
    with (
        contextlib.closing(sqlite3.connect(tmp_path / "direct.db")) as a,
        contextlib.closing(sqlite3.connect(blocker / "late.db")) as b,
    ):
        assert a.execute(sql).fetchall() == b.execute(sql).fetchall()
        apps = {p.app for r in results for p in r.processes}
        assert len(a.execute(sql).fetchall()) == 4 * len(apps) * 6  # top 5 + _other per app


def test_the_backlog_keeps_only_the_process_rows_the_store_writes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "file" / "s.db", top_n=5)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError):
        store.write([interval(n_procs=200)])
    (kept,) = store._backlog
    apps = {p.app for p in kept.processes}
    assert len(kept.processes) == len(apps) * 6  # the top 5 and _other per app: small
    full = interval(n_procs=200)
    assert math.isclose(
        sum(p.joules for p in kept.processes), sum(p.joules for p in full.processes)
    )


def test_corruption_met_while_writing_moves_the_store_aside_and_keeps_the_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path, retention_days=36500)
    store.open()
    store.write([interval(NOW - timedelta(seconds=5 * i), n_procs=5) for i in range(300)])
    assert store._db is not None
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store._db.execute("PRAGMA cache_size=0")  # read pages from the file, as after a while
    with path.open("r+b") as f:  # garbage over every page but the header and schema
        size = f.seek(0, os.SEEK_END)
        f.seek(2 * 4096)
        f.write(os.urandom(size - 2 * 4096))
    with caplog.at_level(logging.ERROR, logger="sci_agent.store"):
        store.write([interval(NOW + timedelta(seconds=5))])  # does not raise
    (aside,) = store.moved_aside
    assert "SQLITE_CORRUPT" in caplog.text and str(aside) in caplog.text
    store.write([interval(NOW + timedelta(seconds=10))])
    store.close()
    assert count(path) == 2 and aside.exists()


def test_an_interval_the_database_refuses_is_dropped_not_kept_to_block_the_rest(
    tmp_path: Path,
) -> None:
    good = [interval(NOW + timedelta(seconds=5 * i)) for i in range(4)]
    r = good[1]
    bad = replace(r, components=(replace(r.components[0], joules=math.nan), *r.components[1:]))
    blocker = tmp_path / "var"
    blocker.write_text("not a folder")
    store = SqliteStore(blocker / "s.db")
    for batch in ([good[0]], [bad], [good[2]]):  # kept in memory while it cannot open
        with pytest.raises(StoreError, match="keeping up to"):
            store.write(batch)
    blocker.unlink()
    with pytest.raises(StoreError, match=r"dropped 1 interval\(s\) whose data .*NOT NULL"):
        store.write([good[3]])
    assert store.backlog == 0 and store.rejected_intervals == 1
    store.write([interval(NOW + timedelta(seconds=30))])  # nothing left to hold it up
    store.close()
    assert count(blocker / "s.db") == 4


@pytest.mark.parametrize("existing", [True, False])
def test_a_store_opened_on_a_full_disk_says_so_and_catches_up(
    tmp_path: Path, existing: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        if existing:
            make_store_file(fs / "s.db", n=1)
        filler = fill(fs)
        store = SqliteStore(fs / "s.db", retention_days=36500)
        with caplog.at_level(logging.ERROR, logger="sci_agent.store"):
            store.open()  # does not raise
        (line,) = [r.getMessage() for r in caplog.records]
        assert f"store {fs / 's.db'}: disk full (SQLITE_" in line
        with pytest.raises(StoreError, match="disk full"):
            store.write([interval(NOW + timedelta(seconds=5))])
        filler.unlink()
        store.write([interval(NOW + timedelta(seconds=10))])
        store.close()
        assert count(fs / "s.db") == 2 + existing
