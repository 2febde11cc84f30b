"""The scoring stage: static energy and embodied carbon shared by policy, rows add up."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.attribution import attribute
from agent.procfs import CLK_TCK
from agent.records import (
    ComponentReading,
    CpuActivity,
    GpuUsage,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
)
from agent.scoring import Scorer

T0 = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_S = 365.25 * 86400
GRID = IntensityValue("FR", 50.0, "static", "average", T0)
GIB = 1 << 30
POLICIES = ["capacity", "full", "separate"]


def interval(
    ticks: dict[str, int],
    joules: float = 3_600_000.0,
    seconds: float = 3600.0,
    static: float = 0.0,
    rss: int = 0,
):
    procs = [
        ProcessActivity(i + 1, 1, app, app, t, rss) for i, (app, t) in enumerate(ticks.items())
    ]
    busy = sum(ticks.values()) + 10  # 10 busy ticks no live process accounts for
    cpu = CpuActivity(busy, round(seconds * 2 * CLK_TCK), 2)  # /proc/stat: 2 CPUs' ticks
    end = T0 + timedelta(seconds=seconds)
    readings = [ComponentReading("cpu0", "cpu", "rapl", joules, None, static, "learned")]
    return attribute("h", T0, end, readings, cpu, procs, 16 * GIB)


def scorer(policy: str = "capacity", pue: float = 1.0) -> Scorer:
    return Scorer({"web": "request"}, 1000.0, 4.0, policy, pue, cpu_count=2)


def host_totals(r: IntervalResult, pue: float = 1.0) -> tuple[float, float]:
    operational = r.total_joules / 3.6e6 * pue * GRID.gco2_per_kwh
    embodied = 1000.0 * 1000 * r.interval_s / (4 * YEAR_S)
    return operational, embodied


def assert_adds_up(r: IntervalResult, pue: float = 1.0) -> None:
    op, emb = host_totals(r, pue)
    assert math.isclose(sum(s.operational_g for s in r.sci), op, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(sum(s.embodied_g for s in r.sci), emb, rel_tol=1e-9, abs_tol=1e-12)
    rows = r.energy_rows()
    assert math.isclose(
        sum(a.total_joules for a in rows), r.total_joules, rel_tol=1e-9, abs_tol=1e-9
    )
    assert all(s.operational_g >= 0 and s.embodied_g >= 0 for s in r.sci)


@pytest.mark.parametrize("policy", POLICIES)
def test_rows_add_up_to_the_host(policy: str) -> None:
    r = scorer(policy, pue=1.2).score(
        interval({"web": 300, "db": 100}, static=1_000_000.0), GRID, {"web": 50}
    )
    assert_adds_up(r, pue=1.2)
    assert r.intensity == GRID
    apps = {s.app for s in r.sci}
    assert ({"_idle", "_unattributed"} <= apps) == (policy != "full")


def test_capacity_policy_shares_static_energy_and_embodied_by_capacity() -> None:
    # 3,600 s × 2 CPUs = 7,200 CPU-s of capacity; web used 3 s, db 1 s.
    r = scorer().score(interval({"web": 300, "db": 100}, static=720_000.0), GRID, {"web": 50})
    apps = {a.app: a for a in r.apps}
    rows = {s.app: s for s in r.sci}
    assert math.isclose(apps["web"].static_joules, 720_000.0 * 3 / 7200)
    assert math.isclose(apps["db"].static_joules, 720_000.0 * 1 / 7200)
    assert math.isclose(
        rows["web"].energy_kwh, (apps["web"].joules + apps["web"].static_joules) / 3.6e6
    )
    host_m = host_totals(r)[1]
    assert math.isclose(rows["web"].embodied_g, host_m * 3 / 7200)
    assert math.isclose(rows["_idle"].embodied_g, host_m * (1 - 4 / 7200))
    idle_left, unattributed_left = r.overhead_left
    assert math.isclose(idle_left.joules, 720_000.0 * (1 - 4 / 7200))
    assert math.isclose(unattributed_left.joules, r.unattributed_joules)
    web = rows["web"]
    assert web.unit == "request" and web.units == 50
    assert math.isclose(web.sci, (web.operational_g + web.embodied_g) / 50)
    assert rows["db"].unit is None and rows["db"].sci is None  # no units: undefined, no crash
    assert_adds_up(r)


def test_capacity_policy_shares_modelled_memory_by_installed_memory() -> None:
    procs = [ProcessActivity(1, 1, "web", "web", 0, 4 * GIB)]
    dram = ComponentReading("dram", "dram", "model", 160.0, None, 160.0, "model")
    result = attribute(
        "h", T0, T0 + timedelta(seconds=10), [dram], CpuActivity(0, 0, 1), procs, 16 * GIB
    )
    r = scorer().score(result, GRID, {})
    assert math.isclose(r.apps[0].static_joules, 40.0)
    assert math.isclose(r.overhead_left[0].dram_joules, 120.0)
    assert_adds_up(r)


def test_capacity_policy_shares_gpu_static_energy_by_gpu_share() -> None:
    procs = [ProcessActivity(1, 1, "ml", "ml", 0, 0)]
    usage = GpuUsage(0.0, sm_weight={1: 60.0, 4242: 40.0})
    gpu = ComponentReading("gpu0", "gpu", "nvml", 1000.0, usage, 700.0, "learned")
    result = attribute("h", T0, T0 + timedelta(seconds=10), [gpu], CpuActivity(0, 0, 1), procs, 0)
    r = scorer().score(result, GRID, {})
    assert math.isclose(r.apps[0].static_joules, 420.0)
    assert math.isclose(r.apps[0].joules, 180.0)
    assert_adds_up(r)


def test_full_policy_hands_everything_to_apps() -> None:
    r = scorer("full").score(interval({"web": 300, "db": 100}, static=720_000.0), GRID, {})
    rows = {s.app: s for s in r.sci}
    assert set(rows) == {"web", "db"}
    assert math.isclose(rows["web"].energy_kwh / rows["db"].energy_kwh, 3.0)
    assert math.isclose(rows["web"].embodied_g / rows["db"].embodied_g, 3.0)
    assert all(a.joules == 0.0 for a in r.overhead_left)
    assert_adds_up(r)


def test_proportional_is_a_deprecated_name_of_full(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = scorer("proportional")
    assert s.idle_policy == "full"
    assert "deprecated" in caplog.text


def test_unknown_policy_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"sci\.idle_policy"):
        scorer("fair")


def test_separate_policy_keeps_static_and_embodied_out_of_apps() -> None:
    r = scorer("separate").score(interval({"web": 300, "db": 100}, static=720_000.0), GRID, {})
    rows = {s.app: s for s in r.sci}
    web_j = next(a.joules for a in r.apps if a.app == "web")
    assert math.isclose(rows["web"].energy_kwh, web_j / 3.6e6)
    assert math.isclose(rows["_idle"].energy_kwh, r.idle_joules / 3.6e6)
    assert rows["web"].embodied_g == 0.0
    assert math.isclose(rows["_idle"].embodied_g, host_totals(r)[1])
    assert all(a.static_joules == 0.0 for a in r.apps)
    assert rows["web"].sci is None


def test_zero_units_is_undefined_not_an_error() -> None:
    r = scorer().score(interval({"web": 1}), GRID, {"web": 0})
    assert next(s for s in r.sci if s.app == "web").sci is None


@pytest.mark.parametrize("policy", POLICIES)
def test_units_of_an_app_with_no_process_are_kept(policy: str) -> None:
    r = scorer(policy).score(interval({"db": 100}), GRID, {"web": 7})
    web = next(s for s in r.sci if s.app == "web")
    assert web.units == 7 and web.unit == "request"
    assert web.energy_kwh == 0.0 and web.embodied_g == 0.0 and web.sci == 0.0
    assert_adds_up(r)


@pytest.mark.parametrize("policy", POLICIES)
def test_no_apps_at_all_keeps_the_energy_in_overhead_rows(policy: str) -> None:
    r = scorer(policy).score(interval({}), GRID, {})
    assert {s.app for s in r.sci} == {"_idle", "_unattributed"}
    assert_adds_up(r)


@settings(max_examples=300, deadline=None)
@given(
    ticks=st.dictionaries(st.sampled_from(["web", "db", "ml", "x"]), st.integers(0, 10_000)),
    joules=st.floats(0, 1e7),
    static_part=st.floats(0, 1.2),
    seconds=st.floats(0.1, 3600),
    policy=st.sampled_from([*POLICIES, "proportional"]),
    units=st.floats(0, 1e6),
    rss=st.integers(0, 8 * GIB),
)
def test_carbon_is_conserved_for_any_interval(
    ticks, joules, static_part, seconds, policy, units, rss
) -> None:
    r = scorer(policy).score(
        interval(ticks, joules, seconds, static=joules * static_part, rss=rss),
        GRID,
        {"web": units},
    )
    assert_adds_up(r)
    assert all(a.static_joules >= 0 for a in r.apps)


# -- an app's SCI moves only when the app changes ---------------------------------------------

MIN_W, MAX_W, VCPUS = 0.74, 3.5, 2  # Cloud Carbon Footprint's per-vCPU coefficients


def ccf_interval(app_ticks: int, neighbour_ticks: int, seconds: float = 60.0) -> IntervalResult:
    """One interval on a 2-vCPU VM measured by the CCF model (static = vCPUs × min W)."""
    busy = app_ticks + neighbour_ticks
    static = VCPUS * MIN_W * seconds
    dynamic = busy / 100 * (MAX_W - MIN_W)
    cpu = CpuActivity(busy, VCPUS * round(seconds * 100), VCPUS)
    reading = ComponentReading("cpu", "cpu", "model", static + dynamic, None, static, "model")
    procs = [ProcessActivity(1, 1, "web", "web", app_ticks, 0)]
    if neighbour_ticks:
        procs.append(ProcessActivity(2, 1, "burner", "burner", neighbour_ticks, 0))
    return attribute("vm", T0, T0 + timedelta(seconds=seconds), [reading], cpu, procs, 4 * GIB)


def web_sci(policy: str, neighbour_ticks: int) -> float:
    # 4 ms of CPU per request, 1,000 requests a minute: 4 CPU-s = 400 ticks.
    r = Scorer({"web": "request"}, 1356.0, 4.0, policy, 1.0).score(
        ccf_interval(400, neighbour_ticks), GRID, {"web": 1000.0}
    )
    web = next(s for s in r.sci if s.app == "web")
    assert web.sci is not None
    return web.sci


def test_sci_stays_within_5_percent_when_a_neighbour_takes_a_core_under_capacity() -> None:
    idle, busy = web_sci("capacity", 0), web_sci("capacity", 6000)  # 6,000 ticks: one core
    assert abs(busy / idle - 1) <= 0.05


def test_sci_moves_under_full_allocation_when_a_neighbour_takes_a_core() -> None:
    """Expected: full allocation hands the idle VM's static energy and embodied carbon to
    whoever ran; once a neighbour runs, the app carries less of them."""
    idle, busy = web_sci("full", 0), web_sci("full", 6000)
    assert busy / idle < 0.5
