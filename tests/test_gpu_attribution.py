"""The recorded H200 two-process trace, through the NVML sensor and attribution."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from agent.attribution import attribute
from agent.records import CpuActivity, ProcessActivity
from agent.sensors.base import IntervalContext
from agent.sensors.nvml import NvmlSensor
from devtools.fake_pynvml import RecordedNvml

A, B = 417, 442  # the recorded pids
CPU = CpuActivity(busy_ticks=0, total_ticks=100, cpu_count=16)


def replay_attributed(idle_watts: float | None = None):
    fake = RecordedNvml()
    sensor = NvmlSensor(idle_watts=idle_watts, nvml=fake, clock=fake.clock)
    sensor.open()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    while fake.advance():
        moment = fake.sample
        live = {pid for pid, _ in moment["running"]} | {A, B}
        procs = [ProcessActivity(p, 1, f"p{p}", "A" if p == A else "B", 0, 0) for p in live]
        ctx = IntervalContext(0.5, CPU, 1)
        readings = sensor.read(ctx)
        start = t0 + timedelta(seconds=moment["t"] - 0.5)
        out.append((moment, attribute("gpu-host", start, start, readings, CPU, procs, 1)))
    sensor.close()
    return fake, out


def test_energy_is_conserved_over_the_whole_trace() -> None:
    fake, results = replay_attributed(idle_watts=81.0)
    measured = sum(r.total_joules for _, r in results)
    counter = (fake.samples[-1]["energy_mj"] - fake.samples[0]["energy_mj"]) / 1000
    assert math.isclose(measured, counter, rel_tol=1e-9)
    parts = sum(
        r.idle_joules + r.unattributed_joules + sum(p.joules for p in r.processes)
        for _, r in results
    )
    assert math.isclose(parts, measured, rel_tol=1e-9)


def test_a_single_process_gets_its_active_energy() -> None:
    _, results = replay_attributed(idle_watts=81.0)
    active = a_joules = 0.0
    for moment, r in results:
        if [pid for pid, _ in moment["running"]] == [A] and r.components:
            active += r.total_joules - r.idle_joules
            a_joules += sum(p.gpu_joules for p in r.processes if p.pid == A)
    assert active > 1000
    assert a_joules / active >= 0.95


def test_shared_period_splits_by_integrated_samples_and_tail_is_unattributed() -> None:
    _, results = replay_attributed(idle_watts=81.0)
    shared = {A: 0.0, B: 0.0}
    tail = 0.0
    for moment, r in results:
        pids = {pid for pid, _ in moment["running"]}
        if pids == {A, B}:
            for p in r.processes:
                shared[p.pid] += p.gpu_joules
        if not pids and moment["t"] > 28:
            tail += r.unattributed_joules
    assert shared[A] > shared[B] > 0  # A always busy, B at ~50 % duty
    assert tail > 0  # power decays for ~2 s after the last process exits
