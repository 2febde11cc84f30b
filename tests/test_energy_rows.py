"""app_energy rows: each app's static share in idle_j, rows summing to the host."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.attribution import attribute
from agent.records import ComponentReading, CpuActivity, IntensityValue, ProcessActivity
from agent.records_json import to_json
from agent.scoring import Scorer
from exporters.points import interval_points
from exporters.prometheus import MetricsSink
from exporters.sqlite_store import SqliteStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GIB = 1 << 30
GRID = IntensityValue("FR", 50.0, "static", "average", T0)


def scored(policy: str):
    procs = [
        ProcessActivity(1, 1, "web", "web", 300, 2 * GIB),
        ProcessActivity(2, 1, "db", "db", 100, 6 * GIB),
    ]
    readings = [
        ComponentReading("cpu0", "cpu", "rapl", 150.0, None, 100.0, "learned"),
        ComponentReading("dram0", "dram", "rapl", 20.0, None, 16.0, "learned"),
    ]
    cpu = CpuActivity(450, 2000, 2)
    r = attribute("h", T0, T0 + timedelta(seconds=10), readings, cpu, procs, 16 * GIB)
    return Scorer({"web": "request"}, 1000.0, 4.0, policy).score(r, GRID, {"web": 10, "api": 3})


@pytest.mark.parametrize("policy", ["capacity", "full", "separate"])
def test_store_rows_carry_the_static_share_and_sum_to_the_host(tmp_path: Path, policy: str) -> None:
    r = scored(policy)
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    store.write([r])
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        rows = {
            app: (cpu, dram, gpu, idle, total)
            for app, cpu, dram, gpu, idle, total in db.execute(
                "SELECT app, cpu_j, dram_j, gpu_j, idle_j, total_j FROM app_energy"
            )
        }
        units = dict(db.execute("SELECT app, units FROM sci"))
    assert math.isclose(sum(v[4] for v in rows.values()), r.total_joules, rel_tol=1e-9)
    for cpu, dram, gpu, idle, total in rows.values():
        assert math.isclose(total, cpu + dram + gpu + idle, rel_tol=1e-12, abs_tol=1e-12)
    web = next(a for a in r.apps if a.app == "web")
    assert rows["web"][3] == pytest.approx(web.static_joules)
    if policy == "capacity":
        # web: 3 CPU-s of 20 → 15 % of 100 J; 2 GiB of 16 GiB → 12.5 % of 16 J
        assert web.static_joules == pytest.approx(15.0 + 2.0)
    assert units["api"] == 3  # units of an app with no process reach the store


def test_points_carry_the_static_share() -> None:
    r = scored("capacity")
    energy = {
        dict(p.tags)["app"]: dict(p.fields)
        for p in interval_points(r)
        if p.measurement == "app_energy"
    }
    assert energy["web"]["idle_j"] == pytest.approx(17.0)
    assert math.isclose(sum(f["total_j"] for f in energy.values()), r.total_joules, rel_tol=1e-9)
    sci = {
        dict(p.tags)["app"]: dict(p.fields) for p in interval_points(r) if p.measurement == "sci"
    }
    assert sci["api"]["units"] == 3.0


def test_once_json_reports_both_parts() -> None:
    apps = {a["app"]: a for a in to_json(scored("capacity"))["apps"]}
    web = apps["web"]
    assert web["static_joules"] == pytest.approx(17.0)
    assert web["dynamic_joules"] == pytest.approx(web["cpu_joules"] + web["dram_joules"])
    assert web["cpu_share"] == pytest.approx(0.15)


def test_units_of_an_app_with_no_process_reach_metrics() -> None:
    r = scored("capacity")
    r = Scorer({"web": "request", "api": "call"}, 1000.0, 4.0).score(r, GRID, {"api": 3})
    sink = MetricsSink()
    sink.open()
    sink.write([r])
    text = sink.exposition().decode()
    assert 'sci_agent_app_functional_units_total{app="api",host="h",unit="call"} 3.0' in text
