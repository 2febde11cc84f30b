"""The real agent exporting to a real InfluxDB: outages and crashes lose nothing.

Every interval the agent stores locally must reach InfluxDB exactly once (same
series and timestamp), whether the server was down for a while or the agent was
killed with SIGKILL with a backlog in its spool.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from devtools.servers import InfluxdServer

AGENT = [sys.executable, "-m", "agent"]
INTERVAL_S = 0.4


def agent_config(tmp_path: Path, server: InfluxdServer, database: str) -> Path:
    server.create_database(database)
    f = tmp_path / "agent.toml"
    f.write_text(
        f'host = "e2e"\ninterval_s = {INTERVAL_S}\n'
        f'[store]\npath = "{tmp_path}/store.db"\n'
        f'[spool]\ndir = "{tmp_path}/spool"\nflush_deadline_s = 5\n'
        f'[sensors.rapl]\nroot = "{tmp_path}/none"\n[sensors.nvml]\nenabled = false\n'
        "[http]\nenabled = false\n"
        f'[influxdb]\nenabled = true\napi = "v1"\nurl = "{server.url}"\n'
        f'database = "{database}"\nusername = "{server.username}"\n'
        f'password = "{server.password}"\nflush_interval_s = 0.2\ntimeout_s = 2\n'
    )
    return f


def start_agent(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*AGENT, "--config", str(cfg), "run"], stderr=log.open("ab"))


def stored_intervals(tmp_path: Path) -> list[int]:
    db = sqlite3.connect(tmp_path / "store.db")
    try:
        return [t for (t,) in db.execute("SELECT ts_ms FROM intervals ORDER BY ts_ms")]
    finally:
        db.close()


def wait_for_intervals(tmp_path: Path, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len(stored_intervals(tmp_path)) >= count:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} intervals stored in {timeout_s}s")


def influx_points(server: InfluxdServer, database: str) -> dict[str, list[int]]:
    """Timestamps of the host_energy points, per component."""
    out: dict[str, list[int]] = {}
    for row in server.rows(
        'SELECT "joules" FROM "host_energy" WHERE "host" = \'e2e\' GROUP BY "component"',
        database,
    ):
        out.setdefault(row["component"], []).append(row["time"])
    return {k: sorted(v) for k, v in out.items()}


def stop_agent(agent: subprocess.Popen[bytes], log: Path) -> None:
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0, log.read_text()


def test_an_influxdb_outage_loses_and_duplicates_nothing(
    tmp_path: Path, influxd: InfluxdServer
) -> None:
    cfg, log = agent_config(tmp_path, influxd, "outage"), tmp_path / "agent.log"
    agent = start_agent(cfg, log)
    try:
        wait_for_intervals(tmp_path, 3)
        influxd.stop()
        before = len(stored_intervals(tmp_path))
        wait_for_intervals(tmp_path, before + 6)  # the agent keeps sampling meanwhile
        influxd.start()
        time.sleep(2.0)  # let the backlog drain (backoff is bounded by a few seconds)
    finally:
        influxd.start()
        stop_agent(agent, log)
    stored = stored_intervals(tmp_path)
    points = influx_points(influxd, "outage")
    assert set(points) == {"cpu", "dram"}
    for component, times in points.items():
        assert times == stored, component  # every interval present, exactly once
    text = log.read_text()
    assert "influxdb" in text and "refused" in text  # the outage was logged…
    assert "delivered" in text  # …and so was the recovery


def test_sigkill_with_a_backlog_replays_it_after_restart(
    tmp_path: Path, influxd: InfluxdServer
) -> None:
    cfg, log = agent_config(tmp_path, influxd, "crash"), tmp_path / "agent.log"
    influxd.stop()
    agent = start_agent(cfg, log)
    try:
        wait_for_intervals(tmp_path, 6)
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=30)
        influxd.start()
    killed_at = stored_intervals(tmp_path)
    agent = start_agent(cfg, log)
    try:
        wait_for_intervals(tmp_path, len(killed_at) + 3)
        time.sleep(1.5)
    finally:
        stop_agent(agent, log)
    stored = stored_intervals(tmp_path)
    for component, times in influx_points(influxd, "crash").items():
        missing = set(stored) - set(times)
        # Only the interval being written at the kill may have reached the store alone.
        assert missing <= {killed_at[-1]}, (component, sorted(missing))
        assert len(times) == len(set(times)) and set(times) <= set(stored)
        assert set(killed_at[:-1]) <= set(times), "the spooled backlog was replayed"


def test_sigterm_flushes_the_spool_before_exit(tmp_path: Path, influxd: InfluxdServer) -> None:
    cfg, log = agent_config(tmp_path, influxd, "flush"), tmp_path / "agent.log"
    agent = start_agent(cfg, log)
    try:
        wait_for_intervals(tmp_path, 4)
    finally:
        stop_agent(agent, log)
    stored = stored_intervals(tmp_path)
    for times in influx_points(influxd, "flush").values():
        assert times == stored
