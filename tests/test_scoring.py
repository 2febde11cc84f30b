"""The scoring stage: SCI rows per app add up to the host under both idle policies."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.attribution import attribute
from agent.records import (
    ComponentReading,
    CpuActivity,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
)
from agent.scoring import Scorer

T0 = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_S = 365.25 * 86400
GRID = IntensityValue("FR", 50.0, "static", "average", T0)


def interval(ticks: dict[str, int], joules: float = 3_600_000.0, seconds: float = 3600.0):
    procs = [ProcessActivity(i + 1, 1, app, app, t, 0) for i, (app, t) in enumerate(ticks.items())]
    busy = sum(ticks.values()) + 10  # 10 busy ticks no live process accounts for
    cpu = CpuActivity(busy, busy * 4, 2)
    end = T0 + timedelta(seconds=seconds)
    readings = [ComponentReading("cpu0", "cpu", "rapl", joules)]
    return attribute("h", T0, end, readings, cpu, procs, 1)


def scorer(policy: str = "proportional", pue: float = 1.0) -> Scorer:
    return Scorer({"web": "request"}, 1000.0, 4.0, policy, pue, cpu_count=2)


def host_totals(r: IntervalResult, pue: float = 1.0) -> tuple[float, float]:
    operational = r.total_joules / 3.6e6 * pue * GRID.gco2_per_kwh
    embodied = 1000.0 * 1000 * r.interval_s / (4 * YEAR_S)
    return operational, embodied


@pytest.mark.parametrize("policy", ["proportional", "separate"])
def test_rows_add_up_to_the_host(policy: str) -> None:
    r = scorer(policy, pue=1.2).score(interval({"web": 300, "db": 100}), GRID, {"web": 50})
    op, emb = host_totals(r, pue=1.2)
    assert math.isclose(sum(s.operational_g for s in r.sci), op, rel_tol=1e-9)
    assert math.isclose(sum(s.embodied_g for s in r.sci), emb, rel_tol=1e-9)
    assert r.intensity == GRID
    apps = {s.app for s in r.sci}
    assert ({"_idle", "_unattributed"} <= apps) == (policy == "separate")


def test_proportional_policy_shares_overhead_by_energy() -> None:
    r = scorer().score(interval({"web": 300, "db": 100}), GRID, {"web": 50})
    rows = {s.app: s for s in r.sci}
    assert math.isclose(rows["web"].energy_kwh / rows["db"].energy_kwh, 3.0)
    assert math.isclose(rows["web"].embodied_g / rows["db"].embodied_g, 3.0)
    web = rows["web"]
    assert web.unit == "request" and web.units == 50
    assert math.isclose(web.sci, (web.operational_g + web.embodied_g) / 50)
    assert rows["db"].unit is None and rows["db"].sci is None  # no units: undefined, no crash


def test_separate_policy_keeps_idle_out_of_apps() -> None:
    r = scorer("separate").score(interval({"web": 300, "db": 100}), GRID, {})
    rows = {s.app: s for s in r.sci}
    web_j = next(a.joules for a in r.apps if a.app == "web")
    assert math.isclose(rows["web"].energy_kwh, web_j / 3.6e6)
    assert math.isclose(rows["_idle"].energy_kwh, r.idle_joules / 3.6e6)
    # web used 3 s of CPU of 2 CPUs × 3600 s: its share of the embodied carbon
    host_m = host_totals(r)[1]
    assert math.isclose(rows["web"].embodied_g, host_m * 3.0 / 7200)
    assert rows["web"].sci is None


def test_zero_units_is_undefined_not_an_error() -> None:
    r = scorer().score(interval({"web": 1}), GRID, {"web": 0})
    assert next(s for s in r.sci if s.app == "web").sci is None


def test_no_apps_at_all_keeps_the_energy_in_overhead_rows() -> None:
    r = scorer().score(interval({}), GRID, {})
    op, emb = host_totals(r)
    assert math.isclose(sum(s.operational_g for s in r.sci), op, rel_tol=1e-9)
    assert math.isclose(sum(s.embodied_g for s in r.sci), emb, rel_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(
    ticks=st.dictionaries(st.sampled_from(["web", "db", "ml", "x"]), st.integers(0, 10_000)),
    joules=st.floats(0, 1e7),
    seconds=st.floats(0.1, 3600),
    policy=st.sampled_from(["proportional", "separate"]),
    units=st.floats(0, 1e6),
)
def test_carbon_is_conserved_for_any_interval(ticks, joules, seconds, policy, units) -> None:
    r = scorer(policy).score(interval(ticks, joules, seconds), GRID, {"web": units})
    op, emb = host_totals(r)
    assert math.isclose(sum(s.operational_g for s in r.sci), op, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(sum(s.embodied_g for s in r.sci), emb, rel_tol=1e-9, abs_tol=1e-12)
    assert all(s.operational_g >= 0 and s.embodied_g >= 0 for s in r.sci)
