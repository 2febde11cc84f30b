"""The daemon loop: a fixed-rate schedule, one batch per cycle to every sink.

Ticks fall on ``start + k × interval`` (no drift). A cycle that overruns skips the
ticks it missed instead of stacking runs, and says so once per overrun streak. A
failing sink is logged (once per distinct error) and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from agent.records import IntervalResult
from exporters.base import Sink

log = logging.getLogger("sci_agent.loop")


class Loop:
    """Runs ``measure`` every ``interval_s`` until ``stop`` is set."""

    def __init__(
        self,
        measure: Callable[[], IntervalResult],
        sinks: Sequence[Sink],
        interval_s: float,
        stop: threading.Event | None = None,
        on_result: Callable[[IntervalResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.measure = measure
        self.sinks = list(sinks)
        self.interval_s = interval_s
        self.stop = stop or threading.Event()
        self.on_result = on_result
        self.cycles = 0
        self.skipped_ticks = 0
        self._clock = clock
        self._sink_errors: dict[str, str] = {}

    def run(self, max_cycles: int | None = None) -> None:
        """Sample until stopped (or ``max_cycles``); the cycle under way always ends."""
        next_tick = self._clock() + self.interval_s
        overrunning = False
        while not self.stop.is_set():
            if self.stop.wait(max(0.0, next_tick - self._clock())):
                break
            self.run_cycle()
            next_tick += self.interval_s
            behind = self._clock() - next_tick
            if behind > 0:
                missed = int(behind // self.interval_s) + 1
                next_tick += missed * self.interval_s
                self.skipped_ticks += missed
                if not overrunning:
                    log.warning(
                        "cycle overran the %gs interval; skipped %d tick(s)",
                        self.interval_s,
                        missed,
                    )
                overrunning = True
            else:
                overrunning = False
            if max_cycles is not None and self.cycles >= max_cycles:
                break

    def run_cycle(self) -> IntervalResult:
        """Sample once and hand the result to every sink."""
        result = self.measure()
        self.cycles += 1
        for sink in self.sinks:
            try:
                sink.write([result])
            except Exception as exc:  # a broken sink must not stop measuring
                message = f"{type(exc).__name__}: {exc}"
                if self._sink_errors.get(sink.name) != message:
                    log.error("sink %s failed: %s", sink.name, message)
                self._sink_errors[sink.name] = message
            else:
                if self._sink_errors.pop(sink.name, None) is not None:
                    log.info("sink %s recovered", sink.name)
        if self.on_result is not None:
            self.on_result(result)
        return result
