"""The daemon loop: a fixed-rate schedule, one batch per cycle to every sink.

Ticks fall on ``start + k × interval`` (no drift). A cycle that overruns skips the
ticks it missed instead of stacking runs, and says so once per overrun streak.

Nothing in a cycle can stop the loop. A cycle whose measurement raises is counted
as failed, logged once per distinct error (the traceback with it; repeats at debug
level), and the loop goes on with the next tick; the first success after failures
logs a recovery line. A cycle that failed for lack of file descriptors is retried at
once with the descriptors of an ``FdReserve``. A failing sink or ``on_result`` hook
is logged the same way and the other sinks still get the interval.

On stop (SIGTERM, SIGINT) the interval under way is not dropped: ``on_stop`` runs
first (the caller stops taking units there), then one last cycle measures the
partial interval, scores it and writes it to every sink.

Between ticks the loop also feeds systemd's watchdog (``watchdog`` every
``watchdog_s``, from this thread, so a hung loop stops feeding it) and applies a
reload asked for by ``request_reload`` (a SIGHUP): the waits are cut into slices so
neither waits for a long ``interval_s``, and neither moves the ticks. A reload runs
only between cycles, never in the middle of one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import NamedTuple

from agent.fdreserve import FdReserve, is_fd_exhaustion
from agent.records import IntervalResult
from exporters.base import Sink

log = logging.getLogger("sci_agent.loop")

#: The last, partial interval lasts at least this long: intervals are keyed by their
#: end in whole milliseconds, so a shorter one could overwrite the one before it.
MIN_FINAL_INTERVAL_S = 0.01
#: Distinct cycle errors remembered for "log once"; beyond that, repeats log at debug.
_MAX_REMEMBERED_ERRORS = 64
#: A reload asked for between ticks is applied within this many seconds.
RELOAD_CHECK_S = 1.0


class CycleStats(NamedTuple):
    """Cycle outcomes since the loop started, for ``/metrics``."""

    ok: int
    failed: int
    last_success_unix: float | None  # wall-clock time the last successful cycle ended


class SinkHealth(NamedTuple):
    """One sink as the loop sees it, for ``/metrics``."""

    sink: str
    up: bool  # its last write succeeded
    failed_writes: int
    backlog_intervals: int  # accepted and held in memory, not yet written (the store)
    dropped_intervals: int  # dropped beyond the backlog's bound


class Loop:
    """Runs ``measure`` every ``interval_s`` until ``stop`` is set, then once more."""

    def __init__(
        self,
        measure: Callable[[], IntervalResult],
        sinks: Sequence[Sink],
        interval_s: float,
        stop: threading.Event | None = None,
        on_result: Callable[[IntervalResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        on_stop: Callable[[], None] | None = None,
        reserve: FdReserve | None = None,
        wall_clock: Callable[[], float] = time.time,
        watchdog: Callable[[], object] | None = None,
        watchdog_s: float | None = None,
        after_cycle: Callable[[], None] | None = None,
        on_reload: Callable[[], None] | None = None,
    ) -> None:
        self.measure = measure
        self.sinks = list(sinks)
        self.interval_s = interval_s
        self.stop = stop or threading.Event()
        self.on_result = on_result
        self.on_stop = on_stop
        self.reserve = reserve
        self.cycles = 0  # successful cycles
        self.failed_cycles = 0
        self.last_success_unix: float | None = None
        self._clock = clock
        self._wall_clock = wall_clock
        self._sink_errors: dict[str, str] = {}
        self.sink_failures: dict[str, int] = {s.name: 0 for s in self.sinks}  # failed writes
        self.sink_last_success: dict[str, float] = {}  # sink → wall-clock time of its last write
        self._cycle_errors: set[str] = set()
        self._failing = 0  # consecutive failed cycles
        self._short_of_fds = False
        self._last_cycle_end: float | None = None
        self.watchdog = watchdog
        self.watchdog_s = watchdog_s if watchdog is not None and watchdog_s else None
        self.after_cycle = after_cycle  # after every cycle, failed or not (e.g. STATUS=)
        self.on_reload = on_reload
        self._reload_requested = False
        self._next_ping = 0.0

    def request_reload(self) -> None:
        """Ask for ``on_reload`` between cycles (safe to call from a signal handler)."""
        self._reload_requested = True

    def sink_health(self) -> list[SinkHealth]:
        """Each sink: up (its last write worked), failed writes, and what it holds back."""
        return [
            SinkHealth(
                sink.name,
                sink.name not in self._sink_errors,
                self.sink_failures.get(sink.name, 0),
                int(getattr(sink, "backlog", 0) or 0),
                int(getattr(sink, "dropped_intervals", 0) or 0),
            )
            for sink in self.sinks
        ]

    def stats(self) -> CycleStats:
        """Successful and failed cycles so far, and when the last success ended."""
        return CycleStats(self.cycles, self.failed_cycles, self.last_success_unix)

    def run(self, max_cycles: int | None = None) -> None:
        """Sample until stopped (or ``max_cycles``); on stop, measure the partial interval."""
        next_tick = self._clock() + self.interval_s
        self._next_ping = self._clock()
        overrunning = False
        while True:
            if self._wait_until(next_tick):
                self._final_cycle()
                return
            if self._reload_requested:
                before = self.interval_s
                self._reload()
                next_tick += self.interval_s - before  # the tick under way, at the new rate
                continue
            self.run_cycle()
            self._feed_watchdog()
            if self.after_cycle is not None:
                self._call("after_cycle", self.after_cycle)
            next_tick += self.interval_s
            behind = self._clock() - next_tick
            if behind > 0:
                missed = int(behind // self.interval_s) + 1
                next_tick += missed * self.interval_s
                if not overrunning:
                    log.warning(
                        "cycle overran the %gs interval; skipped %d tick(s)",
                        self.interval_s,
                        missed,
                    )
                overrunning = True
            else:
                overrunning = False
            if max_cycles is not None and self.cycles + self.failed_cycles >= max_cycles:
                return

    def _wait_until(self, tick: float) -> bool:
        """Wait for ``tick``, feeding the watchdog; True when stopped.

        Returns early (False) when a reload is asked for.
        """
        while True:
            if self._reload_requested and not self.stop.is_set():
                return False  # asked for during the cycle: no need to wait
            now = self._clock()
            timeout = left = max(0.0, tick - now)
            if self.watchdog_s is not None:
                timeout = min(timeout, max(0.0, self._next_ping - now))
            if self.on_reload is not None:
                timeout = min(timeout, RELOAD_CHECK_S)
            if self.stop.wait(timeout):
                return True
            self._feed_watchdog()
            if timeout == left:
                return False

    def _feed_watchdog(self) -> None:
        """Ping the watchdog when a ping is due."""
        if self.watchdog is None or self.watchdog_s is None:
            return
        now = self._clock()
        if now >= self._next_ping:
            self.watchdog()
            self._next_ping = now + self.watchdog_s

    def _reload(self) -> None:
        self._reload_requested = False
        if self.on_reload is not None:
            self._call("on_reload", self.on_reload)

    def run_cycle(self) -> IntervalResult | None:
        """Sample once and hand the result to every sink; ``None`` when the cycle failed."""
        try:
            result = self._measure()
        except Exception as exc:  # nothing may stop measuring: count, log once, go on
            self._cycle_failed(exc)
            return None
        finally:
            self._last_cycle_end = self._clock()
        self.cycles += 1
        self.last_success_unix = self._wall_clock()
        if self._failing:
            log.info("cycles succeed again after %d failed cycle(s)", self._failing)
            self._failing = 0
        for sink in self.sinks:
            self._call(sink.name, partial(sink.write, [result]))
        if self.on_result is not None:
            on_result = self.on_result
            self._call("on_result", lambda: on_result(result))
        return result

    def _measure(self) -> IntervalResult:
        """``measure()``; when it ran out of descriptors, once more with the reserve's."""
        try:
            result = self.measure()
        except Exception as exc:
            if self.reserve is None or not is_fd_exhaustion(exc):
                raise
            if not self._short_of_fds:
                log.warning(
                    "out of file descriptors (%s): measuring with the %d held in reserve",
                    exc,
                    self.reserve.held,
                )
            self._short_of_fds = True
        else:
            if self._short_of_fds:
                log.info("file descriptors available again")
            self._short_of_fds = False
            return result
        with self.reserve.released():
            return self.measure()

    def _final_cycle(self) -> None:
        """Stop taking input, then measure, score and write the partial interval."""
        if self.on_stop is not None:
            self._call("on_stop", self.on_stop)
        if self._last_cycle_end is not None:
            too_soon = MIN_FINAL_INTERVAL_S - (self._clock() - self._last_cycle_end)
            if too_soon > 0:
                time.sleep(too_soon)
        if self.run_cycle() is not None:
            log.info("measured and wrote the partial interval under way at stop")

    def _cycle_failed(self, exc: Exception) -> None:
        self.failed_cycles += 1
        self._failing += 1
        message = f"{type(exc).__name__}: {exc}"
        if message in self._cycle_errors or len(self._cycle_errors) >= _MAX_REMEMBERED_ERRORS:
            log.debug("cycle failed again: %s", message, exc_info=exc)
            return
        self._cycle_errors.add(message)
        log.error("cycle failed, measuring goes on: %s", message, exc_info=exc)

    def _call(self, name: str, action: Callable[[], object]) -> None:
        """Run a sink write or hook; a failure is logged once per distinct error."""
        try:
            action()
        except Exception as exc:  # a broken sink must not stop measuring
            message = f"{type(exc).__name__}: {exc}"
            if self._sink_errors.get(name) != message:
                log.error("%s failed: %s", _what(name), message)
            self._sink_errors[name] = message
            if name in self.sink_failures:
                self.sink_failures[name] += 1
        else:
            if name in self.sink_failures:
                self.sink_last_success[name] = self._wall_clock()
            if self._sink_errors.pop(name, None) is not None:
                log.info("%s recovered", _what(name))


def _what(name: str) -> str:
    """How the log names a sink or a hook."""
    return name if name in ("on_result", "on_stop", "after_cycle", "on_reload") else f"sink {name}"
