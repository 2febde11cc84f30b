"""The agent end to end on this machine: once --json invariants, run + SIGTERM, real children."""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from itertools import pairwise
from pathlib import Path

import pytest

from agent.config import AppRule, Config, NvmlConfig, RaplConfig, SensorsConfig, StoreConfig
from agent.sampler import Sampler
from devtools.servers import free_port

AGENT = [sys.executable, "-m", "agent"]


def write_config(tmp_path: Path, extra: str = "", interval_s: float = 0.5) -> Path:
    f = tmp_path / "agent.toml"
    f.write_text(
        f'host = "test-host"\ninterval_s = {interval_s}\n[store]\npath = "{tmp_path}/store.db"\n'
        f'[sensors.rapl]\nroot = "{tmp_path}/no-powercap"\n[sensors.nvml]\nenabled = false\n'
        + extra
        # never the default port: an agent under `make run` may hold it
        + ("" if "[http]" in extra else f'[http]\nlisten = "127.0.0.1:{free_port()}"\n')
    )
    return f


def test_once_json_keys_and_invariants(tmp_path: Path) -> None:
    out = subprocess.run(
        [*AGENT, "--config", str(write_config(tmp_path)), "once", "--interval", "0.5", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    d = json.loads(out.stdout)
    assert {
        "host",
        "start",
        "end",
        "interval_s",
        "components",
        "total_joules",
        "idle_joules",
        "unattributed_joules",
        "apps",
        "processes",
    } <= d.keys()
    assert d["host"] == "test-host" and d["end"].endswith("Z")
    assert 0.4 < d["interval_s"] < 2.0
    assert {c["component"]: c["source"] for c in d["components"]} == {
        "cpu": "model",
        "dram": "model",
    }
    total = d["total_joules"]
    assert total > 0
    assert math.isclose(total, sum(c["joules"] for c in d["components"]), rel_tol=1e-12)
    procs = sum(p["joules"] for p in d["processes"])
    assert math.isclose(total, d["idle_joules"] + d["unattributed_joules"] + procs, rel_tol=1e-9)
    assert math.isclose(sum(a["joules"] for a in d["apps"]), procs, rel_tol=1e-9, abs_tol=1e-12)
    assert all({"pid", "name", "app", "joules", "cpu_s"} == p.keys() for p in d["processes"])
    grid_keys = {"zone", "value_zone", "gco2_per_kwh", "provider", "signal", "fallback"}
    assert grid_keys == d["intensity"].keys()
    assert d["intensity"]["provider"] == "builtin"  # no grid configured: the offline dataset
    op = sum(s["operational_g"] for s in d["sci"])
    assert math.isclose(op, total / 3.6e6 * d["intensity"]["gco2_per_kwh"], rel_tol=1e-9)
    sci_keys = {"app", "unit", "units", "energy_kwh", "operational_g", "embodied_g", "sci"}
    sci_keys |= {"remote_g", "remote_energy_kwh"}  # the app's AI calls; null: none made
    assert all(sci_keys == s.keys() for s in d["sci"])
    assert all(s["remote_g"] is None and s["remote_energy_kwh"] is None for s in d["sci"])
    app_keys = {"app", "joules", "cpu_joules", "dram_joules", "gpu_joules", "dynamic_joules"}
    app_keys |= {"static_joules", "cpu_share", "dram_share", "gpu_share"}
    assert all(app_keys == a.keys() for a in d["apps"])
    # capacity policy (the default): the static energy apps did not get stays with _idle
    idle = next(s for s in d["sci"] if s["app"] == "_idle")
    static = sum(a["static_joules"] for a in d["apps"])
    assert math.isclose(
        idle["energy_kwh"] * 3.6e6 + static, d["idle_joules"], rel_tol=1e-9, abs_tol=1e-9
    )


def test_once_table_is_readable(tmp_path: Path) -> None:
    out = subprocess.run(
        [*AGENT, "--config", str(write_config(tmp_path)), "once", "--interval", "0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "component" in out.stdout and "unattributed" in out.stdout
    assert "estimated by the power model" in out.stdout


def test_run_stores_intervals_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    agent = subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"], stderr=subprocess.PIPE, text=True
    )
    db_path = tmp_path / "store.db"
    deadline = time.monotonic() + 30
    count = 0
    while time.monotonic() < deadline and count < 4:
        time.sleep(0.25)
        if db_path.exists():
            try:
                count = (
                    sqlite3.connect(db_path).execute("SELECT count(*) FROM intervals").fetchone()[0]
                )
            except sqlite3.OperationalError:
                count = 0
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert count >= 4
    db = sqlite3.connect(db_path)
    rows = db.execute("SELECT ts_ms, start_ms, interval_s FROM intervals ORDER BY ts_ms").fetchall()
    # Fixed-rate schedule: consecutive intervals chain with no gap and no overlap.
    for (end_a, _, _), (_, start_b, _) in pairwise(rows):
        assert end_a == start_b
    assert all(0.3 < s < 1.5 for _, _, s in rows[:-1])
    assert 0.005 <= rows[-1][2] < 1.5  # the partial interval under way at SIGTERM
    assert "stopped after" in err


def _busy_child(duty: float, seconds: float) -> subprocess.Popen[bytes]:
    """A child that is busy ``duty`` of every 20 ms period for ``seconds``."""
    code = (
        "import time\n"
        f"end = time.monotonic() + {seconds}\n"
        "while time.monotonic() < end:\n"
        "    t = time.monotonic()\n"
        f"    while time.monotonic() - t < {0.02 * duty}: pass\n"
        f"    time.sleep({0.02 * (1 - duty)})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, f"duty={duty}"])


def test_two_busy_children_get_energy_in_their_cpu_time_ratio(tmp_path: Path) -> None:
    cfg = Config(
        host="t",
        sensors=SensorsConfig(rapl=RaplConfig(enabled=False), nvml=NvmlConfig(enabled=False)),
        store=StoreConfig(enabled=False),
        apps=(
            AppRule(name="full", cmdline="duty=0.9"),
            AppRule(name="quarter", cmdline="duty=0.3"),
        ),
    )
    sampler = Sampler(cfg)
    sampler.open()
    a, b = _busy_child(0.9, 3.0), _busy_child(0.3, 3.0)
    results = []
    try:
        for _ in range(6):
            time.sleep(0.5)
            results.append(sampler.sample())
    finally:
        a.wait(timeout=30)
        b.wait(timeout=30)
        sampler.close()
    joules = {"full": 0.0, "quarter": 0.0}
    cpu_s = {"full": 0.0, "quarter": 0.0}
    for r in results:
        total = r.idle_joules + r.unattributed_joules + sum(p.joules for p in r.processes)
        assert math.isclose(total, r.total_joules, rel_tol=1e-9)
        for app in r.apps:
            if app.app in joules:
                joules[app.app] += app.cpu_joules
                cpu_s[app.app] += app.cpu_s
    assert cpu_s["full"] > 1.0 and cpu_s["quarter"] > 0.3
    # Attributed CPU energy follows CPU time; the busy share differs per interval, so
    # allow 15 % for intervals where the machine was busier than others.
    energy_ratio = joules["full"] / joules["quarter"]
    time_ratio = cpu_s["full"] / cpu_s["quarter"]
    assert energy_ratio == pytest.approx(time_ratio, rel=0.15)
    assert 1.8 < time_ratio < 4.5  # 0.9 vs 0.3 duty cycles


def test_doctor_explains_missing_rapl_and_exits_0(tmp_path: Path) -> None:
    out = subprocess.run(
        [*AGENT, "--config", str(write_config(tmp_path)), "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "no RAPL zones" in out.stdout
    assert "cpu   model" in out.stdout
    assert "the agent can measure this host" in out.stdout


def test_run_counts_pushed_units_into_the_sci_of_each_interval(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(
        tmp_path,
        f'[http]\nlisten = "127.0.0.1:{port}"\n[grid]\nzone = "FR"\n'
        '[[apps]]\nname = "agent"\ncmdline = "units-test-workload"\nunit = "request"\n',
    )
    # the app's own process (the agent itself is always the app sci-agent)
    code = "import time\nwhile True:\n    sum(range(20000))\n    time.sleep(0.01)"
    workload = subprocess.Popen([sys.executable, "-c", code, "units-test-workload"])
    agent = subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"], stderr=subprocess.PIPE, text=True
    )
    sent = 0
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sent < 60:
            body = json.dumps({"app": "agent", "unit": "request", "count": 3}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/units", body, {"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    assert answer.status == 202
                    sent += 3
            except OSError:
                pass  # not listening yet
            time.sleep(0.05)
        time.sleep(1.2)  # let the last counts land in an interval
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        workload.kill()
        workload.wait()
    assert agent.returncode == 0, err
    db = sqlite3.connect(tmp_path / "store.db")
    units, unit, zone = db.execute(
        "SELECT sum(units), max(unit), (SELECT max(zone) FROM grid_intensity) FROM sci"
        " WHERE app = 'agent'"
    ).fetchone()
    assert (units, unit, zone) == (sent, "request", "FR")
    scored = db.execute(
        "SELECT count(*) FROM sci WHERE app = 'agent' AND units > 0 AND sci > 0"
    ).fetchone()[0]
    assert scored >= 1


# -- stopping and faults: no unit lost, no exception fatal ------------------------------


def _post_unit(port: int) -> bool:
    """POST one unit for the app ``agent``; True when it was accepted (202)."""
    body = json.dumps({"app": "agent", "unit": "request", "count": 1}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/units", body, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return bool(answer.status == 202)
    except OSError:
        return False


def _interval_ends(db_path: Path) -> list[int]:
    """The end (ms) of every interval in the store so far; empty before it exists."""
    if not db_path.exists():
        return []
    try:
        with sqlite3.connect(db_path) as db:
            return [r[0] for r in db.execute("SELECT ts_ms FROM intervals ORDER BY ts_ms")]
    except sqlite3.OperationalError:
        return []


def _wait_for_intervals(db_path: Path, n: int, agent: subprocess.Popen[str]) -> list[int]:
    deadline = time.monotonic() + 30
    ends = _interval_ends(db_path)
    while len(ends) < n and time.monotonic() < deadline and agent.poll() is None:
        time.sleep(0.05)
        ends = _interval_ends(db_path)
    return ends


#: an app that counts units; no process matches it (units-only rows must still be stored)
APP_RULE = '[[apps]]\nname = "agent"\ncmdline = "units-test-workload"\nunit = "request"\n'


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_units_accepted_until_stop_are_all_stored(tmp_path: Path, signum: int) -> None:
    """Units keep arriving up to the signal, sent a fraction of an interval after a tick."""
    port = free_port()
    jsonl = tmp_path / "out.jsonl"
    cfg = write_config(
        tmp_path,
        f'[http]\nlisten = "127.0.0.1:{port}"\n[jsonl]\npath = "{jsonl}"\n' + APP_RULE,
        interval_s=2.0,
    )
    agent = subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"], stderr=subprocess.PIPE, text=True
    )
    accepted = 0
    exited = threading.Event()

    def send() -> None:
        nonlocal accepted
        while not exited.is_set():
            if _post_unit(port):
                accepted += 1
            else:
                time.sleep(0.01)

    sender = threading.Thread(target=send)
    try:
        db_path = tmp_path / "store.db"
        first = _wait_for_intervals(db_path, 1, agent)
        assert first, "the agent wrote no interval"
        sender.start()
        ticks = _wait_for_intervals(db_path, len(first) + 1, agent)
        time.sleep(0.6)  # 30 % into the interval under way
        at_signal = accepted
        agent.send_signal(signum)
        _, err = agent.communicate(timeout=60)
    finally:
        exited.set()
        if sender.is_alive():
            sender.join(timeout=30)
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    assert len(ticks) >= 2 and at_signal > 0
    db = sqlite3.connect(db_path)
    stored = db.execute("SELECT sum(units) FROM sci WHERE app = 'agent'").fetchone()[0]
    last = db.execute("SELECT interval_s FROM intervals ORDER BY ts_ms DESC LIMIT 1").fetchone()
    assert stored == accepted, err
    assert 0 < last[0] < 1.9  # the partial interval was measured and written
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    in_jsonl = sum(s["units"] for d in lines for s in d["sci"] if s["app"] == "agent")
    assert in_jsonl == accepted
    assert "partial interval" in err


def test_run_keeps_sampling_when_file_descriptors_run_out(tmp_path: Path) -> None:
    """Slow connections take every descriptor under a low limit; intervals keep coming."""
    port = free_port()
    limit = 64
    jsonl = tmp_path / "out.jsonl"
    cfg = write_config(
        tmp_path, f'[http]\nlisten = "127.0.0.1:{port}"\n[jsonl]\npath = "{jsonl}"\n'
    )

    def low_limit() -> None:  # soft = hard: the agent cannot raise it
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    agent = subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_limit,
    )
    fd_dir = f"/proc/{agent.pid}/fd"
    held: list[socket.socket] = []
    try:
        assert _wait_for_intervals(tmp_path / "store.db", 1, agent), "the agent wrote nothing"
        deadline = time.monotonic() + 10
        while len(os.listdir(fd_dir)) < limit and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # slow clients: connect, send nothing
                held.append(socket.create_connection(("127.0.0.1", port), timeout=0.2))
            time.sleep(0.01)
        exhausted = len(os.listdir(fd_dir))
        before = len(jsonl.read_text().splitlines())
        time.sleep(3.0)  # well within the endpoint's 10 s read timeout: nothing freed
        after = len(jsonl.read_text().splitlines())
        still = len(os.listdir(fd_dir))
        alive = agent.poll() is None
    finally:
        for conn in held:
            conn.close()
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=60)
    assert exhausted >= limit and still >= limit - 1, f"{exhausted}, {still} of {limit} fds"
    assert alive, err
    assert after - before >= 4, err  # 0.5 s intervals: sampling went on
    assert "out of file descriptors" in err
    assert agent.returncode == 0, err
