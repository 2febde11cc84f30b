"""``make run`` (scripts/run_local.py): real URLs, one failure stops both, a lean install."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import config
from agent.apps import AppNamer, ProcessFacts

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "scripts" / "run_local.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, dash: int, api: int, extra: str = "") -> Path:
    """examples/local.toml with its ports moved to ``dash``/``api`` and 1 s intervals."""
    text = (ROOT / "examples" / "local.toml").read_text()
    text = text.replace("127.0.0.1:9475", f"127.0.0.1:{api}").replace(
        "port = 8501", f"port = {dash}"
    )
    text = text.replace("interval_s = 5", "interval_s = 1")
    text = text.replace('"../var', '"var')  # the config's folder is tmp_path
    f = folder / "local.toml"
    f.write_text(text + "[sensors.nvml]\nenabled = false\n" + extra)
    return f


class Launched:
    """The launcher as a child, its stderr collected line by line."""

    def __init__(self, f: Path, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), "--config", str(f), *args],
            cwd=f.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SCI_AGENT_START_TIMEOUT_S": "120"},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return True
            if self.proc.poll() is not None:
                self.reader.join(timeout=5)
                return any(text in line for line in self.lines)
            time.sleep(0.1)
        return False

    def finish(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=30)
        self.reader.join(timeout=5)
        return code

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- Makefile: a lean run -------------------------------------------------------------------


def make_dry(target: str, tmp_path: Path, *variables: str) -> str:
    """What ``make -n TARGET`` would run, with a virtual environment that does not exist."""
    out = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path}/venv", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    run = make_dry("run", tmp_path)
    installs = [line.split("/bin/", 1)[1] for line in run.splitlines() if "pip install" in line]
    assert installs == [  # no pytest, ruff, mypy, selenium
        "pip install --quiet --upgrade pip",
        "pip install --quiet -e '.[dashboard]'",
    ]
    assert "scripts/run_local.py --config examples/local.toml --demo" in run
    assert "--demo" not in make_dry("run", tmp_path, "DEMO=0").replace("run_local.py", "")
    assert "pip install --quiet -e '.[test,dashboard]'" in make_dry("lint", tmp_path)


# -- one part cannot start: nothing runs, one clear line --------------------------------


def test_a_taken_dashboard_port_stops_make_run_at_once(tmp_path: Path, held_port: int) -> None:
    f = write_config(tmp_path, dash=held_port, api=free_port())
    launched = Launched(f)
    assert launched.finish(timeout=60) == 1
    assert (
        f"make run: cannot start: the dashboard's address 127.0.0.1:{held_port} is already in use"
        f" by another program; stop that program or set [dashboard] port in {f}"
    ) in launched.lines
    assert not (tmp_path / "var").exists()  # the agent never started


def test_a_taken_api_port_stops_make_run_at_once(tmp_path: Path, held_port: int) -> None:
    f = write_config(tmp_path, dash=free_port(), api=held_port)
    launched = Launched(f)
    assert launched.finish(timeout=60) == 1
    assert f"the local API's address 127.0.0.1:{held_port} is already in use" in launched.text
    assert "set [http] listen" in launched.text


def test_an_agent_that_cannot_start_stops_the_dashboard(tmp_path: Path) -> None:
    dash = free_port()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "spool").write_text("")  # a spool folder the agent cannot create
    influx = '[influxdb]\napi = "v1"\ndatabase = "sci"\nurl = "http://127.0.0.1:9"\n'
    f = write_config(tmp_path, dash=dash, api=free_port(), extra=influx)
    launched = Launched(f)
    assert launched.finish(timeout=120) == 1, launched.text
    assert "make run: the agent exited (status 1; its message is above);" in launched.text
    assert "stopping the dashboard" in launched.text
    assert "sci-agent: cannot start: [Errno 20] Not a directory" in launched.text
    assert "sci-agent is running" not in launched.text
    assert not answers(dash)


# -- it starts: real URLs, the demo's SCI per request, Ctrl-C stops all --------------------


def test_banner_shows_the_configs_urls_and_the_demo_gets_an_sci(tmp_path: Path) -> None:
    dash, api = free_port(), free_port()
    f = write_config(tmp_path, dash=dash, api=api)
    launched = Launched(f, "--demo")
    try:
        assert launched.wait_for("sci-agent is running", timeout=150), launched.text
        assert f"  dashboard   http://127.0.0.1:{dash}" in launched.lines
        assert (
            f"  local API   http://127.0.0.1:{api}/v1/units"
            f"  (sci.client reads SCI_AGENT_URL=http://127.0.0.1:{api})"
        ) in launched.lines
        assert f"  store       {tmp_path}/var/sci-agent.db, one line per interval below" in (
            launched.lines
        )
        assert "8501" not in launched.text and "9475" not in launched.text
        assert answers(dash) and answers(api)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not web_sci(tmp_path / "var" / "sci-agent.db"):
            time.sleep(1)
        rows = web_sci(tmp_path / "var" / "sci-agent.db")
        assert rows, "no SCI per request for web within a minute"
        unit, units, sci = rows[-1]
        assert unit == "request" and units > 0 and sci > 0
    finally:
        launched.proc.send_signal(signal.SIGINT)
        code = launched.finish(timeout=60)
    assert code == 0, launched.text
    assert "make run: stopped" in launched.lines
    assert not answers(dash) and not answers(api)


def web_sci(db: Path) -> list[tuple[str, float, float]]:
    """(unit, units, sci) of the ``web`` app's intervals that counted units."""
    if not db.is_file():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return conn.execute(
                "SELECT unit, units, sci FROM sci WHERE app = 'web' AND units > 0"
                " AND sci IS NOT NULL ORDER BY ts_ms"
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return []


# -- the shipped config: a working web app with a unit ------------------------------------


def test_shipped_config_names_the_demo_web_with_a_request_unit() -> None:
    cfg = config.load(ROOT / "examples" / "local.toml")
    web = next(rule for rule in cfg.apps if rule.name == "web")
    assert web.unit == "request"
    assert cfg.store.path == str(ROOT / "var" / "sci-agent.db")  # the repository's var/
    demo = ProcessFacts(
        pid=1,
        comm="python3",
        cmdline=f"{ROOT}/.venv/bin/python {ROOT}/examples/demo_web.py",
        cgroup="/user.slice/user-1000.slice/session-1.scope",
        uid=1000,
    )
    assert AppNamer(cfg.apps).name(demo) == "web"
