"""The SCI report: sum-over-sum scores from the store, and what it discloses."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent import report
from agent.attribution import attribute
from agent.config import AppRule, Config, StoreConfig
from agent.records import ComponentReading, CpuActivity, IntensityValue, ProcessActivity
from agent.scoring import Scorer
from exporters.sqlite_store import SqliteStore

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
