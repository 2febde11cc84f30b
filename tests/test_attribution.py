"""Attribution: exact conservation (property-based), the static/dynamic split and its rules."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.attribution import attribute
from agent.records import ComponentReading, CpuActivity, GpuUsage, ProcessActivity

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(seconds=5)
GIB = 1 << 30


def proc(pid: int, ticks: int, rss: int = 0, app: str = "a") -> ProcessActivity:
    return ProcessActivity(pid, pid * 10, f"p{pid}", app, ticks, rss)


def run(readings, cpu, processes, mem=16 * GIB):
    return attribute("h", T0, T1, readings, cpu, processes, mem)


def assert_conserved(result) -> None:
    """Σ processes + idle + unattributed == measured, per kind and in total."""
    tol = 1e-9 * max(1.0, result.total_joules)
    procs = sum(p.joules for p in result.processes)
    assert math.isclose(
        procs + result.idle_joules + result.unattributed_joules, result.total_joules, abs_tol=tol
    )
    measured = {"cpu": 0.0, "dram": 0.0, "gpu": 0.0}
    for c in result.components:
        measured["cpu" if c.kind == "psys" else c.kind] += c.joules
    for kind in measured:
        parts = (
            sum(getattr(p, f"{kind}_joules") for p in result.processes)
            + getattr(result.idle, f"{kind}_joules")
            + getattr(result.unattributed, f"{kind}_joules")
        )
        assert math.isclose(parts, measured[kind], abs_tol=tol), kind
    assert math.isclose(sum(a.joules for a in result.apps), procs, abs_tol=tol)
    assert result.idle_joules >= -tol
    assert result.unattributed_joules >= -tol
    assert all(p.joules >= 0 for p in result.processes)


energy = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
processes = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 64 * GIB)), max_size=40).map(
    lambda xs: [proc(i + 1, t, r, app=f"app{i % 4}") for i, (t, r) in enumerate(xs)]
)


@st.composite
def reading(draw, component: str, kind: str, source: str, usage: GpuUsage | None = None):
    """A reading whose static floor may be absent, below, or above what was measured."""
    joules = draw(energy)
    static = draw(st.one_of(st.just(0.0), st.floats(0, 1.0).map(lambda f: f * joules), energy))
    return ComponentReading(component, kind, source, joules, usage, static, "learned")


@st.composite
def intervals(draw):
    procs = draw(processes)
    busy = draw(st.integers(0, 20_000))
    total = busy + draw(st.integers(0, 20_000))
    cpu = CpuActivity(busy, total, 8, draw(st.dictionaries(st.integers(0, 2), st.floats(0, 1))))
    readings = [draw(reading(f"cpu{i}", "cpu", "rapl")) for i in range(draw(st.integers(0, 3)))]
    if draw(st.booleans()):
        readings.append(draw(reading("dram0", "dram", "rapl")))
    if draw(st.booleans()):
        readings.append(draw(reading("psys", "psys", "rapl")))
    pids = [p.pid for p in procs] + [99_999]  # one pid that is not a live process
    for g in range(draw(st.integers(0, 2))):
        usage = GpuUsage(
            idle_joules=0.0,
            sm_weight=draw(st.dictionaries(st.sampled_from(pids), st.floats(0, 1000))),
            memory_bytes=draw(st.dictionaries(st.sampled_from(pids), st.integers(0, 80 * GIB))),
        )
        readings.append(draw(reading(f"gpu{g}", "gpu", "nvml", usage)))
    return readings, cpu, procs, draw(st.integers(0, 256 * GIB))


@settings(max_examples=400, deadline=None)
@given(intervals())
def test_energy_is_conserved_for_any_interval(interval) -> None:
    readings, cpu, procs, mem = interval
    r = run(readings, cpu, procs, mem)
    assert_conserved(r)
    # the static floor (capped at the measurement) is idle, never a process's
    static = {"cpu": 0.0, "dram": 0.0, "gpu": 0.0}
    for c in readings:
        static["cpu" if c.kind == "psys" else c.kind] += min(c.static_joules, c.joules)
    tol = 1e-9 * max(1.0, r.total_joules)
    for kind, floor in static.items():
        assert getattr(r.idle, f"{kind}_joules") >= floor - tol, kind
    for a in r.apps:
        for share in (a.cpu_share, a.dram_share, a.gpu_share):
            assert 0.0 <= share <= 1.0 + 1e-12
    for kind in ("cpu", "dram", "gpu"):
        assert sum(getattr(a, f"{kind}_share") for a in r.apps) <= 1.0 + 1e-9, kind


@settings(max_examples=300, deadline=None)
@given(
    own=st.integers(1, 5_000),
    neighbours=st.lists(st.integers(0, 5_000), max_size=8),
    stray=st.integers(0, 500),
    static_w=st.floats(0, 200),
    joules_per_tick=st.floats(0.001, 10),
)
def test_dynamic_cpu_joules_per_tick_do_not_depend_on_neighbours(
    own, neighbours, stray, static_w, joules_per_tick
) -> None:
    """With a linear power model, a process's dynamic joules follow its own ticks only."""

    def own_joules(neighbour_ticks: list[int]) -> float:
        procs = [proc(1, own), *(proc(i + 2, t) for i, t in enumerate(neighbour_ticks))]
        busy = own + sum(neighbour_ticks) + stray
        static = static_w * 5.0
        joules = static + joules_per_tick * busy
        cpu = CpuActivity(busy, 4 * 5 * 100, 4)
        r = run([cpu0(joules, static)], cpu, procs)
        return next(p.cpu_joules for p in r.processes if p.pid == 1)

    alone, crowded = own_joules([]), own_joules(neighbours)
    assert math.isclose(alone, own * joules_per_tick, rel_tol=1e-9)
    assert math.isclose(crowded, alone, rel_tol=1e-9)


def cpu0(joules: float, static: float = 0.0) -> ComponentReading:
    return ComponentReading("cpu0", "cpu", "rapl", joules, None, static, "learned")


def test_cpu_dynamic_energy_split_by_ticks_and_rest_unattributed() -> None:
    # 100 J of which 60 J static; 40 J dynamic over 400 busy ticks: 0.1 J per tick.
    cpu = CpuActivity(busy_ticks=400, total_ticks=1000, cpu_count=2)
    procs = [proc(1, 300), proc(2, 60)]  # 40 busy ticks belong to no live process
    r = run([cpu0(100.0, static=60.0)], cpu, procs)
    by_pid = {p.pid: p for p in r.processes}
    assert math.isclose(by_pid[1].cpu_joules, 30.0)
    assert math.isclose(by_pid[2].cpu_joules, 6.0)
    assert math.isclose(r.idle_joules, 60.0)
    assert math.isclose(r.unattributed_joules, 4.0)
    assert_conserved(r)


def test_no_static_floor_means_all_energy_follows_the_busy_ticks() -> None:
    # The old split used the busy fraction (40 % of 100 J); only the floor is idle now.
    cpu = CpuActivity(busy_ticks=400, total_ticks=1000, cpu_count=2)
    r = run([cpu0(100.0)], cpu, [proc(1, 400)])
    assert math.isclose(r.processes[0].cpu_joules, 100.0)
    assert r.idle_joules == 0.0


def test_static_floor_above_the_measurement_is_capped() -> None:
    r = run([cpu0(10.0, static=25.0)], CpuActivity(100, 200, 1), [proc(1, 100)])
    assert math.isclose(r.idle_joules, 10.0)
    assert r.processes == ()
    assert_conserved(r)


def test_every_package_is_spread_over_the_machines_busy_ticks() -> None:
    # Process ticks carry no package: both packages' dynamic energy follows all busy ticks.
    cpu = CpuActivity(busy_ticks=500, total_ticks=1000, cpu_count=4, package_busy={0: 0.9, 1: 0.1})
    readings = [
        ComponentReading("cpu0", "cpu", "rapl", 100.0, None, 20.0, "learned"),
        ComponentReading("cpu1-die0", "cpu", "rapl", 50.0, None, 20.0, "learned"),
    ]
    r = run(readings, cpu, [proc(1, 400)])
    assert math.isclose(r.processes[0].cpu_joules, (80.0 + 30.0) * 400 / 500)
    assert math.isclose(r.idle_joules, 40.0)
    assert math.isclose(r.unattributed_joules, (80.0 + 30.0) * 100 / 500)


def test_more_process_ticks_than_busy_ticks_attributes_all_dynamic_energy() -> None:
    # /proc/stat and /proc/PID/stat are read microseconds apart; processes can be ahead.
    cpu = CpuActivity(busy_ticks=100, total_ticks=200, cpu_count=1)
    r = run(
        [ComponentReading("cpu", "cpu", "model", 10.0, None, 4.0, "model")],
        cpu,
        [proc(1, 80), proc(2, 40)],
    )
    assert math.isclose(sum(p.cpu_joules for p in r.processes), 6.0)
    assert r.unattributed_joules == 0.0
    assert math.isclose(r.idle_joules, 4.0)
    assert_conserved(r)


def test_dynamic_energy_with_no_busy_tick_is_idle() -> None:
    r = run([cpu0(10.0, static=4.0)], CpuActivity(0, 100, 1), [proc(1, 0, rss=GIB)])
    assert math.isclose(r.idle_joules, 10.0)
    assert r.unattributed_joules == 0.0


def test_dram_dynamic_split_by_rss_over_the_processes_rss_and_static_is_idle() -> None:
    procs = [proc(1, 0, rss=4 * GIB), proc(2, 0, rss=2 * GIB)]
    dram = ComponentReading("dram0", "dram", "rapl", 16.0, None, 10.0, "learned")
    r = run([dram], CpuActivity(0, 0, 1), procs)
    by_pid = {p.pid: p for p in r.processes}
    assert math.isclose(by_pid[1].dram_joules, 4.0)
    assert math.isclose(by_pid[2].dram_joules, 2.0)
    assert math.isclose(r.idle_joules, 10.0)
    apps = {a.app: a for a in r.apps}
    assert apps["a"].rss_bytes == 6 * GIB
    assert math.isclose(apps["a"].dram_share, 6 / 16)  # of the installed memory
    assert_conserved(r)


def test_modelled_memory_that_is_all_static_gives_processes_nothing() -> None:
    dram = ComponentReading("dram", "dram", "model", 16.0, None, 16.0, "model")
    r = run([dram], CpuActivity(0, 0, 1), [proc(1, 0, rss=4 * GIB)])
    assert r.processes == ()
    assert math.isclose(r.idle_joules, 16.0)
    # the app still used memory capacity, for the scoring stage to share static energy by
    assert [(a.app, a.rss_bytes) for a in r.apps] == [("a", 4 * GIB)]


def test_capacity_shares_of_apps() -> None:
    # 5 s × 2 CPUs = 1,000 ticks of capacity; 16 GiB installed; one GPU.
    cpu = CpuActivity(busy_ticks=300, total_ticks=1000, cpu_count=2)
    procs = [proc(1, 200, rss=4 * GIB, app="web"), proc(2, 100, rss=GIB, app="db")]
    gpu = ComponentReading(
        "gpu0", "gpu", "nvml", 100.0, GpuUsage(0.0, sm_weight={1: 75.0, 4242: 25.0}), 50.0
    )
    r = run([cpu0(10.0), gpu], cpu, procs)
    apps = {a.app: a for a in r.apps}
    assert math.isclose(apps["web"].cpu_share, 0.2)
    assert math.isclose(apps["db"].cpu_share, 0.1)
    assert math.isclose(apps["web"].dram_share, 0.25)
    assert math.isclose(apps["web"].gpu_share, 0.75)
    assert apps["db"].gpu_share == 0.0


def test_gpu_dynamic_energy_split_by_sm_samples_then_memory() -> None:
    sm = GpuUsage(idle_joules=80.0, sm_weight={1: 99.0 + 66.0, 2: 33.0})
    r = run(
        [ComponentReading("gpu0", "gpu", "nvml", 278.0, sm, 80.0, "learned")],
        CpuActivity(0, 0, 1),
        [proc(1, 0), proc(2, 0)],
    )
    by_pid = {p.pid: p for p in r.processes}
    assert math.isclose(by_pid[1].gpu_joules, 198.0 * 165 / 198)
    assert math.isclose(by_pid[2].gpu_joules, 198.0 * 33 / 198)
    assert math.isclose(r.idle_joules, 80.0)

    mem = GpuUsage(idle_joules=0.0, memory_bytes={1: 3 * GIB, 2: 1 * GIB})
    r = run(
        [ComponentReading("gpu0", "gpu", "nvml", 100.0, mem)],
        CpuActivity(0, 0, 1),
        [proc(1, 0), proc(2, 0)],
    )
    assert [round(p.gpu_joules, 6) for p in r.processes] == [75.0, 25.0]


def test_gpu_tail_energy_with_no_process_is_unattributed() -> None:
    tail = GpuUsage(idle_joules=81.0)  # power decaying after the last process exited
    r = run(
        [ComponentReading("gpu0", "gpu", "nvml", 215.0, tail, 81.0, "learned")],
        CpuActivity(0, 0, 1),
        [],
    )
    assert math.isclose(r.idle_joules, 81.0)
    assert math.isclose(r.unattributed_joules, 134.0)


def test_gpu_share_of_a_pid_that_is_not_live_is_unattributed() -> None:
    usage = GpuUsage(idle_joules=0.0, sm_weight={1: 50.0, 4242: 50.0})
    r = run(
        [ComponentReading("gpu0", "gpu", "nvml", 100.0, usage)], CpuActivity(0, 0, 1), [proc(1, 0)]
    )
    assert math.isclose(r.processes[0].gpu_joules, 50.0)
    assert math.isclose(r.unattributed_joules, 50.0)


def test_psys_static_is_idle_and_its_dynamic_part_follows_cpu_ticks() -> None:
    psys = ComponentReading("psys", "psys", "rapl", 7.0, None, 5.0, "learned")
    r = run([psys], CpuActivity(10, 20, 1), [proc(1, 10)])
    assert math.isclose(r.idle_joules, 5.0)
    assert math.isclose(r.processes[0].cpu_joules, 2.0)
    assert_conserved(r)


def test_apps_sum_their_processes() -> None:
    cpu = CpuActivity(busy_ticks=100, total_ticks=100, cpu_count=1)
    procs = [proc(1, 50, app="web"), proc(2, 30, app="web"), proc(3, 20, app="db")]
    r = run([ComponentReading("cpu0", "cpu", "rapl", 10.0)], cpu, procs)
    apps = {a.app: a for a in r.apps}
    assert math.isclose(apps["web"].cpu_joules, 8.0)
    assert math.isclose(apps["db"].cpu_joules, 2.0)
    assert math.isclose(apps["web"].cpu_s, 0.8)
    assert r.apps[0].app == "web"  # sorted by energy
