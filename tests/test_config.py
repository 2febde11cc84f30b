"""Configuration: defaults, every error names its key, exit status 2 from the CLI."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config
from agent.config import ConfigError


def test_no_config_gives_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.ENV_CONFIG, raising=False)
    cfg = config.load()
    assert cfg.host == socket.gethostname()
    assert cfg.interval_s == 5.0
    assert cfg.sensors.rapl.root == "/sys/class/powercap"
    assert cfg.store.retention_days == 30
    assert cfg.sensors.model.min_w_per_vcpu is None  # unset: CCF's row for this CPU


def test_full_config_decodes(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text(
        'host = "web-1"\ninterval_s = 2\n'
        '[sensors.rapl]\nroot = "/host/sys/class/powercap"\n'
        "[sensors.model]\ntdp_w = 120\n"
        '[store]\npath = "/tmp/x.db"\nretention_days = 7\n'
        '[[apps]]\nname = "web"\ncmdline = "gunicorn"\n'
        '[[apps]]\nname = "db"\nexe = "postgres"\nuser = "postgres"\n'
    )
    cfg = config.load(f)
    assert (cfg.host, cfg.interval_s, cfg.sensors.model.tdp_w) == ("web-1", 2.0, 120.0)
    assert [a.name for a in cfg.apps] == ["web", "db"]
    assert cfg.apps[1].user == "postgres"


def test_env_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "b.toml"
    f.write_text("interval_s = 3\n")
    monkeypatch.setenv(config.ENV_CONFIG, str(f))
    assert config.load().interval_s == 3.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("intervall_s = 5", "intervall_s: unknown key"),
        ("interval_s = 'fast'", "interval_s: expected a number"),
        ("interval_s = -1", "interval_s: must be greater than 0"),
        ("[sensors.rapl]\nroot = 5", "sensors.rapl.root: expected a string"),
        ("[sensors.nvml]\nidle_w = 5", "sensors.nvml.idle_w: unknown key"),
        ("[sensors.model]\nmin_w_per_vcpu = 4", "sensors.model.max_w_per_vcpu"),
        ("[store]\ntop_processes = 1.5", "store.top_processes: expected an integer"),
        ("[[apps]]\ncmdline = 'x'", "apps[0].name: required"),
        ("[[apps]]\nname = 'web'", "apps[0]: give at least one of"),
        ("[[apps]]\nname = 'web'\ncmdline = '('", "apps[0].cmdline: invalid regular expression"),
        ("[[apps]]\nname = '_idle'\nexe = 'x'", "apps[0].name: names starting with '_'"),
        ("[[apps]]\nname='a'\nexe='x'\n[[apps]]\nname='a'\nexe='y'", "apps[1].name: 'a' is def"),
        ("apps = 3", "apps: expected an array of tables"),
        ("[log]\nlevel = 'loud'", "log.level: must be one of"),
        ("interval_s = ", "invalid TOML"),
    ],
)
def test_bad_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.loads(text)
    assert key in str(err.value)


def test_cli_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[store]\nretention_days = 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(f), "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"sci-agent: config error: {f}: store.retention_days: must be greater than 0, got 0.0"
    ]
    missing = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(tmp_path / "nope.toml"), "once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "config file not found" in missing.stderr
