"""The systemd unit verifies with systemd-analyze; the example configs load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config

ROOT = Path(__file__).resolve().parent.parent


def _need(command: str) -> str:
    found = shutil.which(command)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{command} is missing: install Debian's systemd package")
        pytest.skip(f"{command} is missing: apt-get install systemd")
    return found


def test_unit_file_verifies(tmp_path: Path) -> None:
    analyze = _need("systemd-analyze")
    unit = (ROOT / "packaging/sci-agent.service").read_text()
    # Point ExecStart at this interpreter so verify can resolve the binary here.
    unit = unit.replace("/usr/local/bin/sci-agent", f"{sys.executable} -m agent")
    target = tmp_path / "sci-agent.service"
    target.write_text(unit)
    out = subprocess.run(
        [analyze, "verify", str(target)], capture_output=True, text=True, timeout=120
    )
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if "sci-agent.service" in line and "network-online.target" not in line
    ]
    assert out.returncode == 0 or not problems, out.stdout + out.stderr
    assert problems == [], problems


def test_unit_grants_only_the_rapl_capability() -> None:
    unit = (ROOT / "packaging/sci-agent.service").read_text()
    assert "DynamicUser=yes" in unit
    assert "CapabilityBoundingSet=CAP_DAC_READ_SEARCH\n" in unit
    assert "StateDirectory=sci-agent" in unit


@pytest.mark.parametrize("name", ["examples/local.toml", "packaging/config.toml"])
def test_example_configs_load(name: str) -> None:
    cfg = config.load(ROOT / name)
    assert cfg.interval_s == 5
