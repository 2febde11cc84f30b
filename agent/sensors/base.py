"""The one interface every energy sensor implements, and the timed read that updates
its health record (``agent.records.SensorHealth``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from agent.records import ComponentKind, ComponentReading, CpuActivity, SensorHealth


class SensorUnavailable(Exception):
    """The sensor cannot measure on this host; the message says why and how to fix it."""

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


@dataclass(frozen=True, slots=True)
class IntervalContext:
    """What a sensor may need to know about the interval it reports on."""

    interval_s: float
    cpu: CpuActivity
    memory_total_bytes: int


class Sensor(Protocol):
    """Reads joules per component since the previous call.

    ``open`` probes the hardware and primes the counters (raising
    ``SensorUnavailable`` with a reason and a fix); ``read`` returns the energy
    of the interval that ended now; ``close`` releases what ``open`` took.
    """

    name: str

    def open(self) -> None: ...

    def kinds(self) -> frozenset[ComponentKind]:
        """The component kinds this sensor measures (known after ``open``)."""
        ...

    def read(self, ctx: IntervalContext) -> list[ComponentReading]: ...

    def close(self) -> None: ...


def timed_read(
    sensor: Sensor, ctx: IntervalContext, health: SensorHealth
) -> list[ComponentReading]:
    """Read a sensor, recording its health; a failing sensor yields no readings."""
    started = time.perf_counter()
    try:
        readings = sensor.read(ctx)
    except Exception as exc:  # one broken sensor must not stop the others
        health.ok = False
        health.errors += 1
        health.reason = f"{type(exc).__name__}: {exc}"
        readings = []
    else:
        health.ok = True
        health.reason = ""
        health.last_success = time.time()
    health.last_duration_s = time.perf_counter() - started
    return readings
