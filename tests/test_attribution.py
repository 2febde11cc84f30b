"""Attribution: exact conservation (property-based) and the splitting rules."""

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
def intervals(draw):
    procs = draw(processes)
    busy = draw(st.integers(0, 20_000))
    total = busy + draw(st.integers(0, 20_000))
    cpu = CpuActivity(busy, total, 8, draw(st.dictionaries(st.integers(0, 2), st.floats(0, 1))))
    readings = [
        ComponentReading(f"cpu{i}", "cpu", "rapl", draw(energy))
        for i in range(draw(st.integers(0, 3)))
    ]
    if draw(st.booleans()):
        readings.append(ComponentReading("dram0", "dram", "rapl", draw(energy)))
    if draw(st.booleans()):
        readings.append(ComponentReading("psys", "psys", "rapl", draw(energy)))
    pids = [p.pid for p in procs] + [99_999]  # one pid that is not a live process
    for g in range(draw(st.integers(0, 2))):
        joules = draw(energy)
        usage = GpuUsage(
            idle_joules=draw(energy),
            sm_weight=draw(st.dictionaries(st.sampled_from(pids), st.floats(0, 1000))),
            memory_bytes=draw(st.dictionaries(st.sampled_from(pids), st.integers(0, 80 * GIB))),
        )
        readings.append(ComponentReading(f"gpu{g}", "gpu", "nvml", joules, usage))
    return readings, cpu, procs, draw(st.integers(0, 256 * GIB))


@settings(max_examples=400, deadline=None)
@given(intervals())
def test_energy_is_conserved_for_any_interval(interval) -> None:
    readings, cpu, procs, mem = interval
    assert_conserved(run(readings, cpu, procs, mem))


def test_cpu_active_energy_split_by_ticks_and_rest_unattributed() -> None:
    # 100 J, CPUs busy 40 % of the time: 40 J active, 60 J idle.
    cpu = CpuActivity(busy_ticks=400, total_ticks=1000, cpu_count=2)
    procs = [proc(1, 300), proc(2, 60)]  # 40 busy ticks belong to no live process
    r = run([ComponentReading("cpu0", "cpu", "rapl", 100.0)], cpu, procs)
    by_pid = {p.pid: p for p in r.processes}
    assert math.isclose(by_pid[1].cpu_joules, 30.0)
    assert math.isclose(by_pid[2].cpu_joules, 6.0)
    assert math.isclose(r.idle_joules, 60.0)
    assert math.isclose(r.unattributed_joules, 4.0)
    assert_conserved(r)


def test_per_package_busy_share_is_used_for_each_package() -> None:
    cpu = CpuActivity(busy_ticks=500, total_ticks=1000, cpu_count=4, package_busy={0: 0.9, 1: 0.1})
    readings = [
        ComponentReading("cpu0", "cpu", "rapl", 100.0),
        ComponentReading("cpu1", "cpu", "rapl", 100.0),
    ]
    r = run(readings, cpu, [proc(1, 500)])
    assert math.isclose(r.processes[0].cpu_joules, 90.0 + 10.0)
    assert math.isclose(r.idle_joules, 10.0 + 90.0)
    assert_conserved(r)


def test_multi_die_package_uses_its_package_busy_share() -> None:
    cpu = CpuActivity(busy_ticks=500, total_ticks=1000, cpu_count=4, package_busy={1: 0.25})
    r = run([ComponentReading("cpu1-die0", "cpu", "rapl", 100.0)], cpu, [proc(1, 500)])
    assert math.isclose(r.processes[0].cpu_joules, 25.0)


def test_more_process_ticks_than_busy_ticks_attributes_everything_active() -> None:
    # /proc/stat and /proc/PID/stat are read microseconds apart; processes can be ahead.
    cpu = CpuActivity(busy_ticks=100, total_ticks=200, cpu_count=1)
    r = run([ComponentReading("cpu", "cpu", "model", 10.0)], cpu, [proc(1, 80), proc(2, 40)])
    assert math.isclose(sum(p.cpu_joules for p in r.processes), 5.0)
    assert r.unattributed_joules == 0.0
    assert_conserved(r)


def test_dram_split_by_rss_share_and_free_memory_is_idle() -> None:
    procs = [proc(1, 0, rss=4 * GIB), proc(2, 0, rss=2 * GIB)]
    r = run([ComponentReading("dram0", "dram", "rapl", 16.0)], CpuActivity(0, 0, 1), procs)
    by_pid = {p.pid: p for p in r.processes}
    assert math.isclose(by_pid[1].dram_joules, 4.0)
    assert math.isclose(by_pid[2].dram_joules, 2.0)
    assert math.isclose(r.idle_joules, 10.0)
    assert_conserved(r)


def test_gpu_active_energy_split_by_sm_samples_then_memory() -> None:
    sm = GpuUsage(idle_joules=80.0, sm_weight={1: 99.0 + 66.0, 2: 33.0})
    r = run(
        [ComponentReading("gpu0", "gpu", "nvml", 278.0, sm)],
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
    r = run([ComponentReading("gpu0", "gpu", "nvml", 215.0, tail)], CpuActivity(0, 0, 1), [])
    assert math.isclose(r.idle_joules, 81.0)
    assert math.isclose(r.unattributed_joules, 134.0)


def test_gpu_share_of_a_pid_that_is_not_live_is_unattributed() -> None:
    usage = GpuUsage(idle_joules=0.0, sm_weight={1: 50.0, 4242: 50.0})
    r = run(
        [ComponentReading("gpu0", "gpu", "nvml", 100.0, usage)], CpuActivity(0, 0, 1), [proc(1, 0)]
    )
    assert math.isclose(r.processes[0].gpu_joules, 50.0)
    assert math.isclose(r.unattributed_joules, 50.0)


def test_psys_platform_remainder_is_idle() -> None:
    r = run([ComponentReading("psys", "psys", "rapl", 7.0)], CpuActivity(10, 10, 1), [proc(1, 10)])
    assert math.isclose(r.idle_joules, 7.0)
    assert r.processes == ()


def test_apps_sum_their_processes() -> None:
    cpu = CpuActivity(busy_ticks=100, total_ticks=100, cpu_count=1)
    procs = [proc(1, 50, app="web"), proc(2, 30, app="web"), proc(3, 20, app="db")]
    r = run([ComponentReading("cpu0", "cpu", "rapl", 10.0)], cpu, procs)
    apps = {a.app: a for a in r.apps}
    assert math.isclose(apps["web"].cpu_joules, 8.0)
    assert math.isclose(apps["db"].cpu_joules, 2.0)
    assert r.apps[0].app == "web"  # sorted by energy
