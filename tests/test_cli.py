"""The command line: options before or after the command, --version, bad intervals."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.alerts.commands import list_alerts
from agent.alerts.config import AlertRuleConfig, AlertsConfig
from agent.alerts.formats import human
from agent.attribution import attribute
from agent.cli import _parser, main
from agent.config import Config, EmbodiedConfig
from agent.doctor import embodied_lines
from agent.records import (
    ComponentReading,
    CpuActivity,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
)
from agent.render import summary_line, to_table
from agent.scoring import Scorer
from sci import humanize

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


def _tiny_interval() -> IntervalResult:
    """One scored minute of a few joules and micrograms, with a million units counted."""
    end = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    procs = [ProcessActivity(1, 1, "gunicorn", "web", 50, 1 << 20)]
    readings = [ComponentReading("cpu", "cpu", "model", 5.0, model="linear test model")]
    r = attribute("h", end - timedelta(seconds=60), end, readings, CpuActivity(50, 100, 2), procs,
                  1 << 34)  # fmt: skip
    grid = IntensityValue("FR", 56.0, "static", "average", end)
    return Scorer({"web": "request"}, 0.001, 4.0).score(r, grid, {"web": 1_234_567.0})


def test_once_table_and_run_print_line_use_si_prefixes_never_scientific_notation() -> None:
    r = _tiny_interval()
    web = next(s for s in r.sci if s.app == "web")
    assert web.sci is not None and web.sci < 1e-4  # what `:g` would print as 1e-05
    table, line = to_table(r), summary_line(r)
    for text in (table, line):
        assert re.search(r"\d[eE][-+]?\d", text) is None and "None" not in text, text
    assert "5 J" in table and "83.33 mW" in table  # the cpu component: energy and power
    assert "56 gCO2e/kWh" in table and "1,234,567" in table
    assert humanize.grams(web.sci) in table and humanize.grams(web.carbon_g) in table
    assert humanize.grams(web.sci).endswith(" pg")
    carbon = humanize.grams(sum(s.carbon_g for s in r.sci))
    assert f"| {carbon} CO2e @ 56 gCO2e/kWh" in line
    assert "cpu=83.33 mW" in line and " 5 J in 1 min" in line


def test_alerts_and_doctor_print_small_figures_without_scientific_notation(
    tmp_path: Path,
) -> None:
    assert human("sci", 1.77291e-05, "request") == "17.73 µgCO2e/request"
    rule = AlertRuleConfig(name="tiny", metric="sci", threshold=2e-05, app="web")
    listed = list_alerts(AlertsConfig(state_dir=str(tmp_path), rules=(rule,)), "h")
    assert "sci app=web > 0.00002 over 300s" in listed, listed
    cfg = Config(embodied=EmbodiedConfig(total_kgco2e=2_500_000.0, lifespan_years=4.0))
    line = embodied_lines(cfg, 2)[0]
    assert line == "embodied: 2,500,000 kgCO2e over 4 years", line
