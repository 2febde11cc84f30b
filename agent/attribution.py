"""Split each component's joules among processes, idle and unattributed, exactly.

Every reading is split first into its **static** part (``reading.static_joules``,
what the component draws at zero load, capped at the measured joules) and its
**dynamic** part (the rest). Static energy is ``idle``: it is the cost of the machine
being on, and the scoring stage shares it by capacity. Dynamic energy follows each
process's own work, so a process's dynamic joules depend on its work, not on its
neighbours'. For every component: Σ processes + idle + unattributed == measured
joules (the unattributed part is computed as the remainder, so the identity holds to
float rounding). The rules for the dynamic part:

- CPU (package or model): split by each process's CPU-tick delta at a rate of dynamic
  ÷ busy ticks (``/proc/stat``, all CPUs: process ticks carry no package, so every
  package's dynamic energy is spread over the machine's busy ticks). Busy ticks no
  live process accounts for (orphans reaped by init, interrupts) are
  ``unattributed``, never spread over the survivors. When the processes account for
  more ticks than ``/proc/stat`` (the two are read microseconds apart) the rate is
  dynamic ÷ their ticks. With no busy tick at all the dynamic energy follows no work
  and is idle (the floor was under-estimated).
- psys (the platform beyond packages and DRAM: chipset, fans, voltage regulators):
  the same as CPU, its static floor idle and its dynamic part following CPU ticks
  (fans and regulator losses follow the CPUs' load); reported under CPU.
- DRAM: split by each process's RSS over the processes' total RSS; with no RSS at all,
  idle.
- GPU: the static floor (the idle baseline) is idle; the dynamic part is split by
  per-process SM utilisation samples, else by GPU memory; dynamic energy with no live
  process to carry it (the power tail after a process exits, or a pid in another PID
  namespace) is ``unattributed``.

Each app also gets the share of the machine's capacity it used (CPU-seconds over
interval × CPUs, RSS over installed memory, its share of the GPUs), which the scoring
stage uses to share static energy and embodied carbon.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from agent.records import (
    IDLE_APP,
    UNATTRIBUTED_APP,
    AppEnergy,
    ComponentKind,
    ComponentReading,
    CpuActivity,
    IntervalResult,
    ProcessActivity,
    ProcessEnergy,
)

_KINDS: tuple[ComponentKind, ...] = ("cpu", "dram", "gpu", "psys")


def attribute(
    host: str,
    start: datetime,
    end: datetime,
    readings: Sequence[ComponentReading],
    cpu: CpuActivity,
    processes: Sequence[ProcessActivity],
    memory_total_bytes: int,
) -> IntervalResult:
    """Attribute one interval's measured energy; see the module docstring."""
    n = len(processes)
    per_kind: dict[ComponentKind, list[float]] = {
        "cpu": [0.0] * n,
        "dram": [0.0] * n,
        "gpu": [0.0] * n,
    }
    idle = dict.fromkeys(_KINDS, 0.0)
    unattributed = dict.fromkeys(_KINDS, 0.0)
    gpu_share = [0.0] * n
    gpus = 0

    ticks = cpu_ticks(processes)
    tick_sum = sum(ticks)
    rss = [m if (m := p.rss_bytes) > 0 else 0 for p in processes]
    rss_sum = sum(rss)
    index_of_pid: dict[int, int] = {}  # built for the first GPU reading

    for r in readings:
        static = min(max(0.0, r.static_joules), r.joules) if r.joules > 0 else 0.0
        dynamic = r.joules - static
        idle[r.kind] += static
        if r.kind in ("cpu", "psys"):
            busy = max(tick_sum, cpu.busy_ticks)
            if busy <= 0:
                idle[r.kind] += dynamic  # no CPU work at all to follow
                continue
            given = _split(per_kind["cpu"], dynamic, ticks, busy)
            unattributed[r.kind] += dynamic - given
        elif r.kind == "dram":
            if rss_sum <= 0:
                idle["dram"] += dynamic  # no resident memory to follow
                continue
            given = _split(per_kind["dram"], dynamic, rss, rss_sum)
            unattributed["dram"] += dynamic - given
        else:
            if not index_of_pid:
                index_of_pid.update((p.pid, i) for i, p in enumerate(processes))
            weights, weight_total = _gpu_weights(r, n, index_of_pid)
            given = _split(per_kind["gpu"], dynamic, weights, weight_total)
            unattributed["gpu"] += dynamic - given
            _split(gpu_share, 1.0, weights, weight_total)
            gpus += 1

    # The CPU capacity is what /proc/stat counted over the interval (all CPUs' ticks,
    # idle and steal included); the wall clock only when no /proc/stat delta is known.
    seconds = max(0.0, (end - start).total_seconds())
    kernel_ticks = cpu.total_ticks or seconds * max(1, cpu.cpu_count) * cpu.ticks_per_s
    capacity = _Capacity(
        cpu_ticks=max(kernel_ticks, tick_sum),
        memory_bytes=max(memory_total_bytes, rss_sum),
        gpus=gpus,
    )
    return IntervalResult(
        host=host,
        start=start,
        end=end,
        components=tuple(readings),
        processes=_process_rows(processes, per_kind),
        apps=_app_rows(processes, per_kind, gpu_share, capacity),
        idle=_pseudo_app(IDLE_APP, idle),
        unattributed=_pseudo_app(UNATTRIBUTED_APP, unattributed),
    )


def cpu_ticks(processes: Sequence[ProcessActivity]) -> list[int]:
    """Each process's CPU ticks of the interval: the one place they enter attribution.

    ``ProcessActivity.cpu_ticks`` already includes the children a process reaped during
    the interval (see ``agent.procfs``); negative values cannot carry energy.
    """
    return [t if (t := p.cpu_ticks) > 0 else 0 for p in processes]


def _split(into: list[float], joules: float, weights: Sequence[float], denominator: float) -> float:
    """Add ``joules × weight/denominator`` to each slot; return what was handed out."""
    if joules <= 0 or denominator <= 0:
        return 0.0
    given = 0.0
    for i, w in enumerate(weights):
        if w:
            share = joules * (w / denominator)  # w/denominator ≤ 1: no overflow
            into[i] += share
            given += share
    return given


def _gpu_weights(
    r: ComponentReading, n: int, index_of_pid: dict[int, int]
) -> tuple[list[float], float]:
    """Per-process weights for a GPU (SM samples, else memory) and their total.

    A pid NVML reports that is not a live process here (another PID namespace, or
    already gone) counts in the total but has no slot, so its share is unattributed.
    """
    weights = [0.0] * n
    if r.gpu is None:
        return weights, 0.0
    source: dict[int, float] = {k: float(v) for k, v in r.gpu.sm_weight.items() if v > 0}
    if not source:
        source = {k: float(v) for k, v in r.gpu.memory_bytes.items() if v > 0}
    for pid, w in source.items():
        i = index_of_pid.get(pid)
        if i is not None:
            weights[i] = w
    return weights, sum(source.values())


def _process_rows(
    processes: Sequence[ProcessActivity], per_kind: dict[ComponentKind, list[float]]
) -> tuple[ProcessEnergy, ...]:
    cpu_j, dram_j, gpu_j = per_kind["cpu"], per_kind["dram"], per_kind["gpu"]
    rows = [
        ProcessEnergy(p.pid, p.name, p.app, p.cpu_s, cpu_j[i], dram_j[i], gpu_j[i])
        for i, p in enumerate(processes)
        if cpu_j[i] or dram_j[i] or gpu_j[i]
    ]
    rows.sort(key=lambda r: r.joules, reverse=True)
    return tuple(rows)


@dataclass(frozen=True, slots=True)
class _Capacity:
    """What the machine could have given in the interval, per kind."""

    cpu_ticks: float  # interval × CPUs, in ticks
    memory_bytes: int  # installed
    gpus: int  # GPUs read this interval


def _app_rows(
    processes: Sequence[ProcessActivity],
    per_kind: dict[ComponentKind, list[float]],
    gpu_share: Sequence[float],
    capacity: _Capacity,
) -> tuple[AppEnergy, ...]:
    """One row per app that used energy or capacity (ticks, memory, a GPU).

    A process that used nothing but memory (most of them, most intervals) only adds
    its RSS: the loop stays cheap with thousands of idle processes.
    """
    cpu_j, dram_j, gpu_j = per_kind["cpu"], per_kind["dram"], per_kind["gpu"]
    sums: dict[str, list[float]] = {}
    for i, p in enumerate(processes):
        if cpu_j[i] or dram_j[i] or gpu_j[i] or p.cpu_ticks > 0 or gpu_share[i]:
            row = (
                cpu_j[i],
                dram_j[i],
                gpu_j[i],
                float(max(0, p.cpu_ticks)),
                float(max(0, p.rss_bytes)),
                gpu_share[i],
                max(0.0, p.cpu_s),
            )
            acc = sums.setdefault(p.app, [0.0] * len(row))
            for k, v in enumerate(row):
                acc[k] += v
        elif p.rss_bytes > 0:
            acc = sums.get(p.app) or sums.setdefault(p.app, [0.0] * 7)
            acc[4] += p.rss_bytes
    apps = [
        AppEnergy(
            app,
            c,
            d,
            g,
            cpu_s=cs,
            rss_bytes=int(m),
            cpu_share=t / capacity.cpu_ticks if capacity.cpu_ticks > 0 else 0.0,
            dram_share=m / capacity.memory_bytes if capacity.memory_bytes > 0 else 0.0,
            gpu_share=s / capacity.gpus if capacity.gpus else 0.0,
        )
        for app, (c, d, g, t, m, s, cs) in sums.items()
    ]
    apps.sort(key=lambda a: a.joules, reverse=True)
    return tuple(apps)


def _pseudo_app(name: str, parts: dict[ComponentKind, float]) -> AppEnergy:
    """Idle or unattributed energy; psys (platform) energy is reported under CPU."""
    return AppEnergy(name, parts["cpu"] + parts["psys"], parts["dram"], parts["gpu"])
