"""Split each component's joules among processes, idle and unattributed, exactly.

For every component: Σ processes + idle + unattributed == measured joules (the
unattributed part is computed as the remainder, so the identity holds to float
rounding). The rules:

- CPU (package or model): the busy share of the interval (``/proc/stat``, per
  package where the topology is known) is active energy, the rest idle. Active
  energy is split by each process's CPU-tick delta over the machine's busy ticks
  (including the children it reaped during the interval, see ``agent.procfs``);
  busy time no live process accounts for (orphans reaped by init, interrupts) is
  ``unattributed``, never spread over the survivors.
- DRAM: split by RSS share of the installed memory; what no process holds is idle.
- psys: the platform beyond packages and DRAM (chipset, fans…) is idle/static.
- GPU: energy up to the idle baseline is idle; the rest is split by per-process SM
  utilisation samples, else by GPU memory; energy above idle with no live process
  to carry it (the power tail after a process exits) is ``unattributed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from agent.procfs import CLK_TCK
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

    ticks = [p.cpu_ticks for p in processes]
    tick_sum = sum(ticks)
    rss = [p.rss_bytes for p in processes]
    rss_sum = sum(rss)
    index_of_pid = {p.pid: i for i, p in enumerate(processes)}

    for r in readings:
        if r.kind == "cpu":
            active = r.joules * cpu.busy_fraction_of(_package_index(r.component))
            given = _split(per_kind["cpu"], active, ticks, max(tick_sum, cpu.busy_ticks))
            if tick_sum >= cpu.busy_ticks and given > 0:
                idle["cpu"] += r.joules - given  # every busy tick is a process's
            else:
                idle["cpu"] += r.joules - active
                unattributed["cpu"] += active - given
        elif r.kind == "dram":
            given = _split(per_kind["dram"], r.joules, rss, max(rss_sum, memory_total_bytes))
            idle["dram"] += r.joules - given
        elif r.kind == "gpu":
            idle_j = min(r.joules, r.gpu.idle_joules) if r.gpu is not None else 0.0
            active = r.joules - idle_j
            weights, weight_total = _gpu_weights(r, n, index_of_pid)
            given = _split(per_kind["gpu"], active, weights, weight_total)
            idle["gpu"] += idle_j
            unattributed["gpu"] += active - given
        else:
            idle[r.kind] += r.joules

    process_rows = _process_rows(processes, per_kind)
    return IntervalResult(
        host=host,
        start=start,
        end=end,
        components=tuple(readings),
        processes=process_rows,
        apps=_app_rows(process_rows),
        idle=_pseudo_app(IDLE_APP, idle),
        unattributed=_pseudo_app(UNATTRIBUTED_APP, unattributed),
    )


def _package_index(component: str) -> int | None:
    """``cpu1`` and ``cpu1-die0`` → 1; the model's ``cpu`` → None (whole machine)."""
    suffix = component[3:].split("-", 1)[0]
    return int(suffix) if suffix.isdigit() else None


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
        ProcessEnergy(p.pid, p.name, p.app, p.cpu_ticks / CLK_TCK, cpu_j[i], dram_j[i], gpu_j[i])
        for i, p in enumerate(processes)
        if cpu_j[i] or dram_j[i] or gpu_j[i]
    ]
    rows.sort(key=lambda r: r.joules, reverse=True)
    return tuple(rows)


def _app_rows(rows: Iterable[ProcessEnergy]) -> tuple[AppEnergy, ...]:
    sums: dict[str, list[float]] = {}
    for r in rows:
        acc = sums.setdefault(r.app, [0.0, 0.0, 0.0, 0.0])
        acc[0] += r.cpu_joules
        acc[1] += r.dram_joules
        acc[2] += r.gpu_joules
        acc[3] += r.cpu_s
    apps = [AppEnergy(app, c, d, g, s) for app, (c, d, g, s) in sums.items()]
    apps.sort(key=lambda a: a.joules, reverse=True)
    return tuple(apps)


def _pseudo_app(name: str, parts: dict[ComponentKind, float]) -> AppEnergy:
    """Idle or unattributed energy; psys (platform) energy is reported under CPU."""
    return AppEnergy(name, parts["cpu"] + parts["psys"], parts["dram"], parts["gpu"])
