"""``sci-agent measure`` end to end: real commands, real process trees, real signals."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_agent_run import AGENT, write_config

ROOT = Path(__file__).resolve().parents[1]

# A busy tree: the root busies 0.5 CPU-s and runs a child that busies 0.8 CPU-s; it
# also forks a child that detaches (setsid) a grandchild and exits at once, so the
# grandchild (1.0 CPU-s) is orphaned, outlives the root and is reaped by `measure`.
# Each process writes its own CPU time (getrusage SELF) just before it exits.
TREE = r"""
import os, resource, subprocess, sys, time
out = sys.argv[1]
LEAF = len(sys.argv) > 2

def busy(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass

def record(tag):
    ru = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.path.join(out, f"{tag}-{os.getpid()}"), "w") as f:
        f.write(repr(ru.ru_utime + ru.ru_stime))

if LEAF:
    busy(0.8)
    record("leaf")
    sys.exit(0)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        busy(1.0)
        deadline = time.monotonic() + 30
        while not any(n.startswith("root-") for n in os.listdir(out)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # still running when the root has exited
        record("grandchild")
        os._exit(0)
    record("child")
    os._exit(0)
os.wait()
subprocess.run([sys.executable, __file__, out, "leaf"], check=True)
busy(0.5)
record("root")
"""


BUSY = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


def measure(
    config: Path, *args: str, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, "--config", str(config), "measure", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        stdin=subprocess.DEVNULL,
    )


def last_json(stdout: str) -> dict[str, object]:
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_busy_tree_with_a_detached_grandchild(tmp_path: Path) -> None:
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    out = tmp_path / "cpu"
    out.mkdir()
    done = measure(write_config(tmp_path), "--json", "--", sys.executable, str(script), str(out))
    assert done.returncode == 0, done.stderr
    run = last_json(done.stdout)
    recorded = {p.name.split("-")[0]: float(p.read_text()) for p in out.iterdir()}
    assert set(recorded) == {"root", "child", "leaf", "grandchild"}
    expected = sum(recorded.values())
    assert expected > 2.3
    cpu_s = run["cpu_s"]
    assert isinstance(cpu_s, float)
    print(f"measured {cpu_s:.2f} CPU-s; the processes' own accounting {expected:.2f}")
    assert math.isclose(cpu_s, expected, rel_tol=0.05, abs_tol=0.1)
    assert run["left_running"] == []  # the grandchild was reaped in the grace period
    assert run["exit_code"] == 0 and run["signal"] is None
    assert "subreaper" in str(run["tracking"])


def test_non_zero_exit_is_passed_through(tmp_path: Path) -> None:
    done = measure(write_config(tmp_path), "--json", "--", sys.executable, "-c", "exit(3)")
    assert done.returncode == 3
    assert last_json(done.stdout)["exit_code"] == 3


def test_command_killed_by_a_signal(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    done = measure(write_config(tmp_path), "--json", "--", sys.executable, "-c", code)
    assert done.returncode == 128 + signal.SIGKILL
    run = last_json(done.stdout)
    assert run["exit_code"] == 137 and run["signal"] == "SIGKILL"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 42), (signal.SIGINT, 43)])
def test_signal_is_forwarded_and_the_handlers_exit_code_returned(
    tmp_path: Path, signum: int, code: int
) -> None:
    ready = tmp_path / "ready"
    child = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal({int(signum)}, lambda *_: sys.exit({code}))\n"
        f"pathlib.Path({str(ready)!r}).write_text('ready')\n"
        "time.sleep(60)\n"
    )
    config = write_config(tmp_path)
    proc = subprocess.Popen(
        [*AGENT, "--config", str(config), "measure", "--json", "--", sys.executable, "-c", child],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # no terminal: the signal comes only from this test
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert last_json(stdout)["exit_code"] == code


def test_command_not_found_and_no_command(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = measure(config, "--", "no-such-command-here")
    assert done.returncode == 127
    assert "no-such-command-here: command not found" in done.stderr
    done = measure(config, "--")
    assert done.returncode == 2 and "usage: sci-agent measure" in done.stderr
    done = measure(config, "--units", "0", "--", "true")
    assert done.returncode == 2 and "--units" in done.stderr


def test_json_keys_and_sci_per_unit(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    code = BUSY.format(s=0.3)
    done = measure(config, "--json", "--units", "4", "--unit", "epoch", "--app", "train",
                   "--", sys.executable, "-c", code)  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = last_json(done.stdout)
    keys = {"command", "exit_code", "duration_s", "cpu_s", "energy_joules", "energy_kwh"}
    keys |= {"components", "carbon_g", "intensity", "sci", "run_id", "app", "host", "start"}
    keys |= {"end", "static_joules"}
    assert keys <= run.keys()
    assert run["app"] == "train" and run["host"] == "test-host"
    assert run["command"] == [sys.executable, "-c", code]
    components = run["components"]
    assert isinstance(components, list) and components
    assert all({"component", "source", "model"} <= c.keys() for c in components)
    carbon = run["carbon_g"]
    assert isinstance(carbon, dict)
    assert math.isclose(carbon["total"], carbon["operational"] + carbon["embodied"])
    intensity = run["intensity"]
    assert isinstance(intensity, dict)
    assert {"gco2_per_kwh", "zone", "provider"} <= intensity.keys()
    assert intensity["provider"] == "builtin"
    assert math.isclose(
        carbon["operational"], run["energy_kwh"] * intensity["gco2_per_kwh"], rel_tol=1e-9
    )
    sci = run["sci"]
    assert isinstance(sci, dict)
    assert sci["units"] == 4 and sci["unit"] == "epoch"
    assert math.isclose(sci["g_per_unit"], carbon["total"] / 4, rel_tol=1e-12)
    energy = run["energy_joules"]
    assert isinstance(energy, float) and energy > 0
    assert math.isclose(run["energy_kwh"], energy / 3.6e6, rel_tol=1e-9)  # PUE 1
    assert 0.3 <= run["cpu_s"] < 1.5  # type: ignore[operator]
    # the text form says the same
    done = measure(config, "--units", "2", "--", sys.executable, "-c", "pass")
    assert done.returncode == 0
    for label in ("duration", "CPU time", "energy", "static", "carbon", "intensity", "SCI"):
        assert label in done.stdout
    assert "CO2e per unit (2 units)" in done.stdout


def test_without_units_sci_is_null(tmp_path: Path) -> None:
    done = measure(write_config(tmp_path), "--json", "--", sys.executable, "-c", "pass")
    assert last_json(done.stdout)["sci"] == {"units": None, "unit": None, "g_per_unit": None}


def test_orphans_still_running_after_the_grace_period_are_left(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        null = os.open(os.devnull, os.O_RDWR)\n"
        "        for fd in (0, 1, 2): os.dup2(null, fd)\n"  # a daemon: no pipe held open
        f"        open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "        time.sleep(30)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "while not os.path.exists(" + repr(str(pid_file)) + "): time.sleep(0.02)\n"
    )
    started = time.monotonic()
    done = measure(write_config(tmp_path), "--json", "--grace", "0.5", "--",
                   sys.executable, "-c", code)  # fmt: skip
    took = time.monotonic() - started
    pid = int(pid_file.read_text())
    try:
        assert done.returncode == 0, done.stderr
        assert last_json(done.stdout)["left_running"] == [pid]
        assert took < 25
        os.kill(pid, 0)  # left running
    finally:
        os.kill(pid, signal.SIGKILL)


def test_progress_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    script = (
        "import sys\n"
        "from agent.config import load\n"
        "from agent.jobs.measure import run_measured\n"
        f"cfg = load({str(config)!r})\n"
        "code = run_measured(cfg, [sys.executable, '-c', 'import time; time.sleep(1.5)'],"
        " interval_s=0.1, progress=True, progress_every_s=0.4)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "elapsed" in line]
    assert len(lines) >= 2, done.stderr
    assert all("J so far" in line and "W now" in line for line in lines)


def test_runs_are_stored_with_their_intervals(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    for app in ("first", "second"):  # a run right after another still stores its intervals
        done = measure(config, "--json", "--app", app, "--", sys.executable, "-c", "pass")
        assert done.returncode == 0, done.stderr
        assert last_json(done.stdout)["stored_intervals"] is True
    db = sqlite3.connect(tmp_path / "store.db")
    rows = db.execute("SELECT app, exit_code, stored_intervals, json FROM runs").fetchall()
    assert sorted(r[0] for r in rows) == ["first", "second"]
    assert all(json.loads(r[3])["app"] == r[0] for r in rows)
    apps = {r[0] for r in db.execute("SELECT DISTINCT app FROM app_energy")}
    assert {"first", "second"} <= apps  # the dashboard and report see the job as an app
    report = subprocess.run(
        [*AGENT, "--config", str(config), "report", "--app", "first", "--since", "1h",
         "--format", "json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(report.stdout)["app"] == "first"


def test_with_an_agent_running_only_the_run_is_stored(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    daemon = subprocess.Popen(
        [*AGENT, "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        store = tmp_path / "store.db"
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline and daemon.poll() is None
            if store.exists():
                try:
                    with sqlite3.connect(store) as db:
                        if db.execute("SELECT count(*) FROM intervals").fetchone()[0] >= 2:
                            break
                except sqlite3.OperationalError:
                    pass  # the schema is being made
            time.sleep(0.2)
        done = measure(config, "--json", "--app", "alongside", "--",
                       sys.executable, "-c", "pass")  # fmt: skip
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    assert done.returncode == 0, done.stderr
    run = last_json(done.stdout)
    assert run["stored_intervals"] is False
    assert "agent" in str(run["note"])
    db = sqlite3.connect(store)
    assert db.execute("SELECT count(*) FROM runs WHERE app = 'alongside'").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM app_energy WHERE app = 'alongside'").fetchone()[0] == 0


def test_job_namer_counts_an_adopters_children_not_the_adopter() -> None:
    from agent.apps import AppNamer, ProcessFacts
    from agent.jobs.membership import JobNamer

    namer = JobNamer(AppNamer(()), "job", job_id="x", proc_root="/nonexistent")
    namer.add_adopter(100)

    def facts(pid: int, ppid: int) -> ProcessFacts:
        return ProcessFacts(pid=pid, comm="c", cmdline="c", cgroup="/", uid=0, ppid=ppid)

    assert namer.name(facts(101, 100)) == "job"  # an orphan adopted by `measure`
    assert namer.name(facts(100, 1)) != "job"  # `measure` itself is the agent's
    assert namer.name(facts(102, 101)) == "job"  # and the orphan's own children
