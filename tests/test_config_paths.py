"""Relative paths in a config file resolve against its folder; a present [influxdb] is on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import config
from agent.config import ConfigError

AGENT_TOML = """\
interval_s = 0.2
[store]
path = "var/x.db"
[jsonl]
path = "out/intervals.jsonl"
[sensors]
state_dir = "state"
[sensors.nvml]
enabled = false
[sensors.rapl]
root = "no-powercap"
[spool]
dir = "spool"
[alerts]
state_dir = "alerts"
[http]
enabled = false
"""


def cli(f: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m agent --config F ARGS`` run in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(f), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def test_relative_paths_in_a_file_resolve_against_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    f = folder / "agent.toml"
    f.write_text(AGENT_TOML + '[grid]\nproviders = ["csv"]\n[grid.csv]\npath = "grid.csv"\n')
    cfg = config.load(f)
    assert cfg.store.path == str(folder / "var" / "x.db")
    assert cfg.jsonl.path == str(folder / "out" / "intervals.jsonl")
    assert cfg.sensors.state_dir == str(folder / "state")
    assert cfg.sensors.rapl.root == str(folder / "no-powercap")
    assert cfg.spool.dir == str(folder / "spool")
    assert cfg.alerts.state_dir == str(folder / "alerts")
    assert cfg.grid.csv.path == str(folder / "grid.csv")


def test_a_relative_config_path_still_resolves_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "agent.toml").write_text('[store]\npath = "../data/s.db"\n')
    monkeypatch.chdir(tmp_path)
    assert config.load("conf/agent.toml").store.path == str(tmp_path / "data" / "s.db")


def test_defaults_absolute_paths_and_stdout_are_left_alone(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('[jsonl]\npath = "-"\n[procfs]\nroot = "/proc"\n')
    cfg = config.load(f)
    assert cfg.jsonl.path == "-" and cfg.procfs.root == "/proc"
    assert cfg.store.path == "var/sci-agent.db"  # a default: the working directory, as before
    assert cfg.sensors.state_dir == "var/state"
    assert config.loads('[store]\npath = "var/a.db"\n').store.path == "var/a.db"  # no file


def test_report_from_another_folder_finds_the_store(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "conf", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    f = folder / "local.toml"
    f.write_text(AGENT_TOML)
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(f), "run"],
        cwd=elsewhere,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = folder / "out" / "intervals.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_lines(out)) < 2:
        time.sleep(0.1)
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert (folder / "var" / "x.db").is_file()
    assert not (elsewhere / "var").exists() and not (elsewhere / "out").exists()
    assert f"store ({folder}/var/x.db)" in err  # the start line names the absolute path
    app = json.loads(_lines(out)[-1])["apps"][0]["app"]

    report = cli(f, "report", "--app", app, "--since", "1h", "--format", "json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["app"] == app

    doctor = cli(Path("conf/local.toml"), "doctor", cwd=tmp_path)
    assert f"config:   {f}\n" in doctor.stdout
    assert f"store:    ok  {folder}/var/x.db (" in doctor.stdout


def test_doctor_shows_a_default_store_path_absolute(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text("[sensors.nvml]\nenabled = false\n[http]\nenabled = false\n")
    doctor = cli(f, "doctor", cwd=tmp_path)
    assert f"store:    ok  {tmp_path}/var/sci-agent.db (will be created)" in doctor.stdout


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


# -- [influxdb]: a present section is on ----------------------------------------------------


def test_an_influxdb_section_without_enabled_is_enabled() -> None:
    cfg = config.loads('[influxdb]\nurl = "http://db:8086"\norg = "o"\nbucket = "sci"\n')
    assert cfg.influxdb.enabled
    assert not config.loads("interval_s = 5\n").influxdb.enabled  # no table: off
    off = config.loads('[influxdb]\nenabled = false\nurl = "http://db:8086"\n')
    assert not off.influxdb.enabled


def test_an_enabled_section_missing_its_bucket_says_why_it_is_on() -> None:
    with pytest.raises(ConfigError) as err:
        config.loads('[influxdb]\nurl = "http://db:8086"\n')
    assert "influxdb.org: required" in str(err.value)
    assert "enabled = false" in str(err.value)


def test_run_logs_the_influxdb_sink_of_a_section_without_enabled(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(
        AGENT_TOML.replace("interval_s = 0.2", "interval_s = 30")
        + '[influxdb]\napi = "v1"\nurl = "http://127.0.0.1:9"\ndatabase = "sci"\n'
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(f), "run"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert agent.stderr is not None
    line = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "sampling every" not in line:
        line = agent.stderr.readline()
        if not line and agent.poll() is not None:
            break
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)
    assert "influxdb (http://127.0.0.1:9)" in line, line
    assert f"store ({tmp_path}/var/x.db)" in line
