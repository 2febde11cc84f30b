"""The SCI report: sum-over-sum scores from the store, and what it discloses."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import report
from agent.attribution import attribute
from agent.config import AppRule, Config, StoreConfig
from agent.records import ComponentReading, CpuActivity, IntensityValue, ProcessActivity
from agent.scoring import Scorer
from exporters.sqlite_store import SqliteStore
from sci import humanize

NOW = datetime.now(UTC).replace(microsecond=0)


def fill(path: Path) -> list:
    """Two intervals with very different units per carbon, written to a store."""
    scorer = Scorer({"web": "request"}, 1000.0, 4.0, cpu_count=2)
    results = []
    for k, (ticks, units, gco2) in enumerate([(100, 1, 100.0), (100, 100, 300.0)]):
        end = NOW - timedelta(minutes=10 - k)
        procs = [ProcessActivity(1, 1, "gunicorn", "web", ticks, 1 << 30)]
        cpu = CpuActivity(ticks, ticks * 2, 2)
        readings = [
            ComponentReading("cpu", "cpu", "model", 500.0),
            ComponentReading("dram", "dram", "model", 50.0),
        ]
        r = attribute("web-1", end - timedelta(seconds=60), end, readings, cpu, procs, 1 << 34)
        grid = IntensityValue("FR", gco2, "static", "average", end, fallback=k == 1)
        results.append(scorer.score(r, grid, {"web": units}))
    store = SqliteStore(path)
    store.open()
    store.write(results)
    store.close()
    return results


def config(path: Path) -> Config:
    return Config(
        store=StoreConfig(path=str(path)), apps=(AppRule(name="web", exe="x", unit="request"),)
    )


def test_report_is_sum_over_sum_and_discloses_the_boundary(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    results = fill(db)
    rows = [next(s for s in r.sci if s.app == "web") for r in results]
    built = report.build(config(db), "web", NOW - timedelta(hours=1), NOW)
    carbon = sum(s.operational_g + s.embodied_g for s in rows)
    assert math.isclose(built.sci_g_per_unit, carbon / 101)
    mean_of_ratios = sum(s.sci for s in rows) / 2
    assert not math.isclose(built.sci_g_per_unit, mean_of_ratios)
    assert built.unit == "request" and built.units == 101 and built.intervals == 2
    assert math.isclose(built.intensity_gco2_per_kwh, 200.0)  # equal durations
    assert built.modelled == ["cpu (model)", "dram (model)"] and built.measured == []
    assert any("network" in x for x in built.left_out)
    assert built.intensity_sources == [
        {
            "zone": "FR",
            "value_zone": "FR",
            "provider": "static",
            "signal": "average",
            "intervals": 2,
            "fallback_intervals": 1,
        }
    ]
    md = built.to_markdown()
    assert "mg CO2e per request" in md and "Software boundary" in md and "idle policy" in md
    assert json.loads(built.to_json())["units"] == 101


def test_report_cli_formats_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    fill(db)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{db}"\n[[apps]]\nname = "web"\nexe = "x"\nunit = "request"\n')
    run = [sys.executable, "-m", "agent", "--config", str(cfg), "report"]
    out = subprocess.run(
        [*run, "--app", "web", "--since", "1h", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["app"] == "web"
    bad = subprocess.run([*run, "--app", "nope"], capture_output=True, text=True, timeout=60)
    # the default capacity policy stores _idle and _unattributed rows beside the apps
    assert bad.returncode == 1 and "apps in the store: _idle, _unattributed, web" in bad.stderr
    since = subprocess.run(
        [*run, "--app", "web", "--since", "yesterday"], capture_output=True, text=True, timeout=60
    )
    assert since.returncode == 1 and "--since" in since.stderr


def fill_small(path: Path, unit: str | None, ran: tuple[bool, ...]) -> None:
    """Tiny intervals (millijoules, micrograms) of ``web``, which runs only where ``ran``."""
    scorer = Scorer({"web": unit} if unit else {}, 0.001, 4.0, cpu_count=2)
    results = []
    for k, runs in enumerate(ran):
        end = NOW - timedelta(minutes=10 - k)
        procs = [ProcessActivity(1, 1, "gunicorn", "web", 50, 1 << 20)] if runs else []
        readings = [ComponentReading("cpu", "cpu", "model", 0.05)]
        r = attribute("web-1", end - timedelta(seconds=60), end, readings, CpuActivity(50, 100, 2),
                      procs, 1 << 34)  # fmt: skip
        grid = IntensityValue("FR", 56.0, "static", "average", end)
        results.append(scorer.score(r, grid, {"web": 3.0} if runs else {}))
    store = SqliteStore(path)
    store.open()
    store.write(results)
    store.close()


SCIENTIFIC = re.compile(r"\d[eE][-+]?\d")


def test_report_numbers_have_si_prefixes_and_never_scientific_notation(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    fill_small(db, "request", (True, True))
    built = report.build(config(db), "web", NOW - timedelta(hours=1), NOW)
    assert built.energy_kwh < 1e-4 and built.sci_g_per_unit is not None  # tiny on purpose
    md = built.to_markdown()
    assert SCIENTIFIC.search(md) is None and "None" not in md, md
    assert f"**SCI = {humanize.grams(built.sci_g_per_unit)} CO2e per request**" in md
    assert humanize.grams(built.sci_g_per_unit).endswith((" µg", " ng", " mg"))
    assert f"- Energy (E): {humanize.kwh(built.energy_kwh)}\n" in md
    assert "- Grid intensity (I): 56 gCO2e/kWh (time-weighted)" in md
    assert f"- Total carbon: {humanize.grams(built.carbon_g)} CO2e\n" in md
    assert "- Functional unit (R): request; counted: 6\n" in md
    raw = json.loads(built.to_json())  # JSON keeps raw numbers
    assert raw["energy_kwh"] == built.energy_kwh and raw["sci_undefined_reason"] is None


def test_report_without_a_unit_says_why_in_a_sentence_and_json_gives_the_reason(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    fill_small(db, None, (True,))
    cfg = Config(store=StoreConfig(path=str(db)), apps=(AppRule(name="web", exe="x"),))
    built = report.build(cfg, "web", NOW - timedelta(hours=1), NOW)
    md = built.to_markdown()
    assert (
        "**SCI: not defined — app web has no functional unit configured;"
        ' add `unit = "request"` to its [[apps]] rule**'
    ) in md
    assert "undefined: no" not in md and "counted in the period" not in md
    raw = json.loads(built.to_json())
    assert raw["sci_g_per_unit"] is None
    assert "no functional unit configured" in raw["sci_undefined_reason"]
    idle = report.build(cfg, "_idle", NOW - timedelta(hours=1), NOW)
    assert "_idle is the host's energy no application claims" in idle.to_markdown()


def test_report_labels_the_apps_intervals_beside_the_periods(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    fill_small(db, "request", (True, False, True))
    built = report.build(config(db), "web", NOW - timedelta(hours=1), NOW)
    assert built.intervals == 2 and built.intensity_sources[0]["intervals"] == 3
    md = built.to_markdown()
    assert (
        "- Intervals: 3 in the window asked for (every interval with a grid intensity,"
        " whether the app ran or not); web ran in 2 of them\n"
    ) in md
    assert "(2 intervals)" not in md


def test_two_hosts_never_read_as_an_app_running_in_more_intervals_than_the_window() -> None:
    built = report.SciReport(
        app="api", unit="request", period_start="a", period_end="b",
        hosts=["host-01", "host-02"], intervals=714, sci_g_per_unit=1e-4, carbon_g=1.0,
        energy_kwh=0.1, intensity_gco2_per_kwh=40.0, operational_g=0.5, embodied_g=0.5,
        units=10_000.0, intensity_sources=[{"zone": "FR", "provider": "csv",
        "signal": "average", "intervals": 357, "fallback_intervals": 0}],
    )  # fmt: skip
    md = built.to_markdown()
    assert "ran in 714 of them" not in md  # the dashboard showed "ran in 714" of 357
    assert "api has 714 interval rows, summed over 2 hosts" in md


@pytest.mark.parametrize("since", ["0m", "0s", "-5m", "0.0h"])
def test_since_must_be_a_positive_duration(since: str) -> None:
    with pytest.raises(report.ReportError) as err:
        report.parse_since(since)
    assert str(err.value).startswith(
        "--since: must be a positive duration such as 15m, 24h or 7d"
    )


def test_report_cli_refuses_since_zero(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    fill(db)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{db}"\n')
    out = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(cfg), "report", "--app", "web",
         "--since", "0m"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    assert "--since: must be a positive duration such as 15m, 24h or 7d" in out.stderr
    assert "--from must be before --to" not in out.stderr
