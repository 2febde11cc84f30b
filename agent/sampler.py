"""One sampling cycle: scan /proc, read /proc/stat and the sensors, then attribute."""

from __future__ import annotations

import time
from collections.abc import Callable

from agent.apps import AppNamer
from agent.attribution import attribute
from agent.config import Config
from agent.procfs import ProcScanner
from agent.records import IntervalResult, utc_now
from agent.sensors import IntervalContext, SensorSet, open_sensors
from agent.sensors.base import timed_read


class Sampler:
    """Holds the state between cycles (previous counters and process ticks)."""

    def __init__(
        self,
        config: Config,
        sensors: SensorSet | None = None,
        scanner: ProcScanner | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.sensors = sensors
        self.scanner = scanner or ProcScanner(
            AppNamer(config.apps), config.procfs.root, config.procfs.sys_root
        )
        self._clock = clock
        self._last = 0.0
        self._last_wall = utc_now()

    def open(self) -> None:
        """Open the sensors and take the baseline every later interval starts from."""
        if self.sensors is None:
            self.sensors = open_sensors(self.config)
        self.scanner.scan()
        self._last, self._last_wall = self._clock(), utc_now()
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
        now, wall = self._clock(), utc_now()
        cpu = self.scanner.cpu_activity()
        ctx = IntervalContext(now - self._last, cpu, self.scanner.memory_total_bytes)
        readings = []
        for sensor in self.sensors.sensors:
            readings.extend(timed_read(sensor, ctx, self.sensors.health[sensor.name]))
        start, self._last, self._last_wall = self._last_wall, now, wall
        return attribute(
            self.config.host,
            start,
            wall,
            readings,
            cpu,
            processes,
            self.scanner.memory_total_bytes,
        )

    def close(self) -> None:
        if self.sensors is not None:
            self.sensors.close()
        self.scanner.close()
