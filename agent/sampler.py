"""One sampling cycle: scan /proc, read /proc/stat and the sensors, then attribute."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from agent.apps import AppNamer
from agent.attribution import attribute
from agent.config import Config
from agent.cpu_charge import charge_once
from agent.procfs import ProcScanner
from agent.records import CpuActivity, IntervalResult, utc_now
from agent.sensors import IntervalContext, SensorSet, open_sensors
from agent.sensors.base import timed_read

log = logging.getLogger("sci_agent.sampler")
_CLAMP_LOG_EVERY_S = 3600.0


def _jitter(cpu: CpuActivity) -> int:
    """Ticks by which processes may out-count ``/proc/stat`` with nothing charged twice.

    Per-process times are the scheduler's exact runtimes; ``/proc/stat`` samples ticks
    and leaves steal out. Measured on a 2-vCPU VM: 2–8 % apart, so beyond one tick per
    CPU and 10 % of the busy ticks an excess is reaped time counted in an earlier
    interval; within it the attribution rate is scaled, as for any rounding.
    """
    return cpu.cpu_count + cpu.busy_ticks // 10


class Sampler:
    """Holds the state between cycles (previous counters and process ticks)."""

    def __init__(
        self,
        config: Config,
        sensors: SensorSet | None = None,
        scanner: ProcScanner | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.sensors = sensors
        self.scanner = scanner or ProcScanner(
            AppNamer(config.apps),
            config.procfs.root,
            config.procfs.sys_root,
            cgroup_root=config.procfs.cgroup_root or None,
            full_scan_every=config.procfs.full_scan_every,
        )
        self._clock = clock
        self._wall_clock = wall_clock
        self._last = 0.0
        self._last_wall = self._wall_clock()
        self.clamped_ticks_total = 0
        self._clamp_logged_at: float | None = None

    def open(self) -> None:
        """Open the sensors and take the baseline every later interval starts from."""
        if self.sensors is None:
            self.sensors = open_sensors(self.config)
        self.scanner.scan()
        self._last, self._last_wall = self._clock(), self._wall_clock()
        self.scanner.cpu_activity()

    def sample(self) -> IntervalResult:
        """Measure and attribute the interval since the previous call (or ``open``).

        The ``/proc`` scan comes first: it is the step that needs new file
        descriptors, and when it fails no counter has been read, so the next call
        covers this interval too. Once the counters are read the interval is taken.
        """
        if self.sensors is None:
            raise RuntimeError("Sampler.open() must be called first")
        processes = self.scanner.scan()
        now, wall = self._clock(), self._wall_clock()
        cpu = self.scanner.cpu_activity()
        ctx = IntervalContext(now - self._last, cpu, self.scanner.memory_total_bytes)
        readings = []
        for sensor in self.sensors.sensors:
            readings.extend(timed_read(sensor, ctx, self.sensors.health[sensor.name]))
        checked = charge_once(processes, cpu.busy_ticks, cpu.total_ticks, _jitter(cpu))
        start, self._last, self._last_wall = self._last_wall, now, wall
        result = attribute(
            self.config.host,
            start,
            wall,
            readings,
            cpu,
            checked.processes,
            self.scanner.memory_total_bytes,
        )
        if checked.clamped_ticks:
            self._note_clamp(checked.clamped_ticks, now)
        return replace(result, clamped_ticks=checked.clamped_ticks, measured_s=ctx.interval_s)

    def _note_clamp(self, ticks: int, now: float) -> None:
        """Count reaped ticks dropped as already counted by /proc/stat; log hourly at most."""
        self.clamped_ticks_total += ticks
        if self._clamp_logged_at is None or now - self._clamp_logged_at >= _CLAMP_LOG_EVERY_S:
            self._clamp_logged_at = now
            log.info(
                "%d reaped-children CPU ticks exceeded /proc/stat's busy ticks and were not "
                "charged again (%d since start); their energy was unattributed when they ran",
                ticks,
                self.clamped_ticks_total,
            )

    def close(self) -> None:
        if self.sensors is not None:
            self.sensors.close()
        self.scanner.close()
