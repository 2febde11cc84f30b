"""CPU charged once: per-process ticks checked against what the kernel says was busy.

``/proc/stat`` counts every busy tick once. Processes' own ticks (utime + stime) add
up to it within rounding, but the CPU of children reaped between two scans reaches
the parent's ``cutime`` only when it is reaped, which can be an interval after the
children ran (their ticks were then ``unattributed`` in that interval). Such
reaped ticks are the only part that can exceed the busy ticks, so the excess is
taken from them, in proportion, and never from a bystander's own ticks: a process
that merely ran beside a spawner keeps exactly its share. No process is charged
more than the interval's capacity (interval × CPUs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from agent.records import ProcessActivity


@dataclass(frozen=True, slots=True)
class ChargedTicks:
    """Processes with their ticks checked, and how many reaped ticks were dropped."""

    processes: tuple[ProcessActivity, ...]
    clamped_ticks: int


def charge_once(
    processes: Sequence[ProcessActivity],
    busy_ticks: int,
    capacity_ticks: int,
    tolerance_ticks: int = 0,
) -> ChargedTicks:
    """Clamp reaped ticks so Σ ticks ≤ busy ticks (+ rounding tolerance) and each ≤ capacity.

    ``capacity_ticks`` is the interval's ticks over all CPUs (``/proc/stat``'s total);
    0 or less means unknown and skips the per-process cap.
    """
    ticks = sum(p.cpu_ticks for p in processes)
    over = capacity_ticks > 0 and any(p.cpu_ticks > capacity_ticks for p in processes)
    rows = [_capped(p, capacity_ticks) for p in processes] if over else list(processes)
    capped = sum(p.cpu_ticks for p in rows) if over else ticks
    clamped = ticks - capped
    excess = capped - busy_ticks
    if excess <= tolerance_ticks:  # the usual interval: nothing to take back
        return ChargedTicks(tuple(rows), clamped)
    reaped_total = sum(p.reaped_ticks for p in rows)
    if excess > tolerance_ticks and reaped_total > 0:
        cut = _proportional_cuts([p.reaped_ticks for p in rows], min(excess, reaped_total))
        rows = [
            replace(p, cpu_ticks=p.cpu_ticks - c, reaped_ticks=p.reaped_ticks - c) if c else p
            for p, c in zip(rows, cut, strict=True)
        ]
        clamped += sum(cut)
    return ChargedTicks(tuple(rows), clamped)


def _capped(p: ProcessActivity, capacity_ticks: int) -> ProcessActivity:
    """One process charged at most the interval's capacity, reaped ticks cut first."""
    over = p.cpu_ticks - capacity_ticks
    if capacity_ticks <= 0 or over <= 0:
        return p
    from_reaped = min(over, p.reaped_ticks)
    return replace(p, cpu_ticks=capacity_ticks, reaped_ticks=p.reaped_ticks - from_reaped)


def _proportional_cuts(weights: list[int], amount: int) -> list[int]:
    """Integer cuts summing to ``amount``, proportional to ``weights`` (each ≤ its weight)."""
    total = sum(weights)
    cuts = [amount * w // total for w in weights]
    short = amount - sum(cuts)
    by_remainder = sorted(
        range(len(weights)), key=lambda i: (amount * weights[i]) % total, reverse=True
    )
    for i in by_remainder:
        if short <= 0:
            break
        if cuts[i] < weights[i]:
            cuts[i] += 1
            short -= 1
    return cuts
