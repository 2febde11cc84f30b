"""The agent keeps measuring through store and disk faults: a corrupt store, a store
that cannot be opened, and a full disk under the store and the InfluxDB spool at once."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from agent.doctor import store_status
from agent.loop import Loop
from devtools.servers import free_port
from exporters.points import interval_points
from exporters.runner import SpoolRunner
from exporters.spool import Spool
from exporters.spooled import SpooledSink
from exporters.sqlite_store import SqliteStore
from exporters.testing import RecordingNetworkSink
from tests.test_store import NOW, interval
from tests.tmpfs import fill, small_tmpfs

AGENT = [sys.executable, "-m", "agent"]


def run_agent(tmp_path: Path, store: Path, until: Path, cycles: int = 3) -> tuple[int, str]:
    """``sci-agent run`` until ``until`` (JSON lines) holds ``cycles`` lines; SIGTERM it."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'host = "test-host"\ninterval_s = 0.3\n[store]\npath = "{store}"\n'
        f'[jsonl]\npath = "{until}"\n'
        f'[sensors.rapl]\nroot = "{tmp_path}/no-powercap"\n[sensors.nvml]\nenabled = false\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'  # never the default port
    )
    agent = subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and agent.poll() is None:
        if until.exists() and len(until.read_text().splitlines()) >= cycles:
            break
        time.sleep(0.2)
    if agent.poll() is None:
        agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    return agent.returncode, err


def test_the_agent_runs_on_with_a_corrupt_store(tmp_path: Path) -> None:
    store = tmp_path / "sci-agent.db"
    garbage = os.urandom(32 << 10)
    store.write_bytes(garbage)
    code, err = run_agent(tmp_path, store, tmp_path / "out.jsonl")
    assert code == 0, err
    assert "cannot start" not in err
    (aside,) = tmp_path.glob("sci-agent.db.corrupt-*")
    assert aside.read_bytes() == garbage  # the old file is still there
    assert f"store {store} is corrupt (SQLITE_NOTADB" in err and str(aside) in err
    with contextlib.closing(sqlite3.connect(store)) as db:
        assert db.execute("SELECT count(*) FROM intervals").fetchone()[0] >= 3


def test_a_store_that_cannot_be_opened_does_not_stop_the_other_sinks(tmp_path: Path) -> None:
    blocker = tmp_path / "var"
    blocker.write_text("a file where the store's folder should be")
    out = tmp_path / "out.jsonl"
    code, err = run_agent(tmp_path, blocker / "sci-agent.db", out, cycles=4)
    assert code == 0, err
    assert len(out.read_text().splitlines()) >= 4  # measuring and exporting went on
    assert f"store {blocker / 'sci-agent.db'}: cannot use it" in err
    assert "retrying at each cycle" in err
    assert "closing with" in err  # what could not be written is said at stop


def test_a_full_disk_under_the_store_and_the_spool_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_tmpfs(tmp_path / "fs", size="4m") as fs:
        store = SqliteStore(fs / "s.db")
        store.open()
        server = RecordingNetworkSink("influxdb")
        spool = Spool(fs / "spool", max_bytes=2 << 20, segment_bytes=64 << 10)
        runner = SpoolRunner(server, spool, batch_size=100, sleep=lambda _s: None)
        spooled = SpooledSink("influxdb", spool, runner, top_n=5)
        results = [interval(NOW + timedelta(seconds=5 * i), n_procs=8) for i in range(50)]
        feed = iter(results)
        loop = Loop(lambda: next(feed), [store, spooled], 5)

        def cycles(n: int) -> None:
            for _ in range(n):
                loop.run_cycle()
                runner.step()  # the sender delivers (and acknowledges) as it would

        cycles(5)
        filler = fill(fs)
        with caplog.at_level(logging.INFO):
            cycles(40)  # the outage
            assert store.backlog == 40
            filler.unlink()
            cycles(5)
            while runner.step() == 0.0:
                pass
        store.close()
        with contextlib.closing(sqlite3.connect(fs / "s.db")) as db:
            stored = db.execute("SELECT count(*) FROM intervals").fetchone()[0]
        spooled.close()
    sent = [p.to_line() for r in results for p in interval_points(r, 5)]
    assert stored == 50 and store.dropped_intervals == 0
    assert sorted(server.received) == sorted(sent) and spool.dropped_lines == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors  # one for the store, one for the spool
    assert any("disk full (SQLITE_FULL" in e and str(fs / "s.db") in e for e in errors)
    assert any("disk full (ENOSPC" in e and str(fs / "spool") in e for e in errors)
    recovered = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    assert len(recovered) == 1  # the loop's, for the store; the spool never failed a write
    assert "rollback" not in caplog.text


def test_doctor_names_a_corrupt_store_and_what_run_will_do(tmp_path: Path) -> None:
    store = tmp_path / "sci-agent.db"
    store.write_bytes(os.urandom(8192))
    ok, text = store_status(str(store))
    assert not ok and f"{store} is corrupt" in text and "moves it aside" in text
    assert store.exists() and not list(tmp_path.glob("*.corrupt-*"))  # doctor only looks
