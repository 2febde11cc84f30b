"""The command line: options before or after the command, --version, bad intervals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import _parser, main

AGENT = [sys.executable, "-m", "agent"]


def _config(tmp_path: Path) -> Path:
    f = tmp_path / "agent.toml"
    f.write_text(
        f'host = "cli-host"\n[store]\npath = "{tmp_path}/s.db"\n[http]\nenabled = false\n'
        f'[sensors.rapl]\nroot = "{tmp_path}/none"\n[sensors.nvml]\nenabled = false\n'
    )
    return f


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_is_accepted_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    f = str(_config(tmp_path))
    argv = ["--config", f, "doctor"] if where == "before" else ["doctor", "--config", f]
    out = subprocess.run([*AGENT, *argv], capture_output=True, text=True, timeout=60)
    assert "host:     cli-host" in out.stdout, out.stderr


def test_log_level_after_the_command() -> None:
    args = _parser().parse_args(["once", "--log-level", "debug"])
    assert args.sub_log_level == "debug"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("sci-agent ")


@pytest.mark.parametrize("interval", ["0", "-1"])
def test_once_refuses_an_interval_that_is_not_positive(tmp_path: Path, interval: str) -> None:
    out = subprocess.run(
        [*AGENT, "--config", str(_config(tmp_path)), "once", "--interval", interval],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--interval must be greater than 0" in out.stderr
