"""The one sender thread per network sink: drains its spool in batches, with backoff.

The runner reads the oldest batch, sends it and acknowledges it, so delivery is at
least once (a batch sent but not yet acknowledged when the agent dies is sent again,
which is harmless: replays are idempotent). It acts on the class of the failure
(``exporters.delivery``):

- ``RetryableError`` (or any unexpected exception): keep the batch, back off
  exponentially with full jitter (0.5 s doubling up to ``max_backoff_s``), retry it;
- ``AuthError``: log once per distinct message, keep the data, retry every
  ``max_backoff_s``;
- ``RejectedError``: log the batch's first line, bisect the batch to deliver its good
  lines, drop only the lines the server refuses one by one, acknowledge.

Between batches the runner sleeps ``flush_interval_s`` or until ``wake()``; a
backoff is not cut short by ``wake()``, only by ``stop()``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporters.delivery import AuthError, NetworkSink, RejectedError, RetryableError
from exporters.spool import Batch, Spool

log = logging.getLogger("sci_agent.export")

BASE_BACKOFF_S = 0.5
#: Most requests one rejected batch may cost while bisecting; the rest is dropped.
MAX_BISECT_SENDS = 256
_LINE_PREVIEW = 200


@dataclass(frozen=True, slots=True)
class RunnerStats:
    """One network sink's delivery totals since the agent started, for ``/metrics``."""

    sink: str
    sent_lines: int
    rejected_lines: int  # refused by the server, dropped
    backlog_lines: int  # in the spool, not yet delivered
    retries: int
    dropped_lines: int = 0  # lost to the spool's bound (disk full, or the spool full)


class SpoolRunner:
    """Drains ``spool`` into ``sink`` on a daemon thread; counters for /metrics and doctor.

    ``clock`` (monotonic seconds), ``sleep``, ``wall_clock`` (Unix time) and
    ``jitter`` (uniform in [0, 1)) are injectable for tests; with ``sleep`` given,
    waits call it instead of waiting on the wake/stop events.
    """

    def __init__(
        self,
        sink: NetworkSink,
        spool: Spool,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        max_backoff_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self.sink = sink
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_backoff_s = max_backoff_s
        self.sent_lines = 0
        self.rejected_lines = 0
        self.retries = 0
        self.failures = 0  # consecutive failed attempts; 0 once a batch gets through
        self.last_error: str | None = None
        self.last_success: float | None = None  # Unix time the server last settled a batch
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._jitter = jitter
        self._pending: Batch | None = None  # the batch being retried
        self._auth_failing = False
        self._logged: str | None = None  # the failure message logged in this streak
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.sink.name

    @property
    def backlog_lines(self) -> int:
        """Lines in the spool not yet delivered."""
        return self.spool.pending_lines()

    def stats(self) -> RunnerStats:
        """The delivery totals now, for ``/metrics``."""
        return RunnerStats(
            self.name,
            self.sent_lines,
            self.rejected_lines,
            self.backlog_lines,
            self.retries,
            self.spool.dropped_lines,
        )

    # -- thread control ---------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread (once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"spool-{self.name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Send now instead of at the next flush interval (a backoff still runs out)."""
        self._wake.set()

    def stop(self, deadline_s: float) -> None:
        """Stop the thread, then send while the sink accepts, for at most ``deadline_s``.

        What is not delivered by then stays in the spool for the next start. A send
        already in progress is bounded by the sink's own timeout, not by the deadline.
        """
        end = self._clock() + deadline_s
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(max(0.0, end - self._clock()))
            if thread.is_alive():
                log.warning(
                    "%s: a send is still running at the stop deadline; "
                    "%d line(s) stay in the spool for the next start",
                    self.name,
                    self.backlog_lines,
                )
                return
        while self._clock() < end:
            try:
                outcome = self._attempt()
            except Exception as exc:
                log.error("%s: the spool failed while flushing: %s", self.name, exc)
                break
            if not outcome:  # empty, or the sink does not accept now
                break
        left = self.backlog_lines
        if left:
            log.warning(
                "%s: stopping with %d line(s) left in the spool for the next start",
                self.name,
                left,
            )

    # -- one attempt --------------------------------------------------------------------

    def step(self) -> float:
        """Make one delivery attempt; returns the seconds to wait before the next."""
        outcome = self._attempt()
        if outcome is None:
            return self.flush_interval_s
        if outcome:
            return 0.0
        if self._auth_failing:
            return self.max_backoff_s
        ceiling = min(self.max_backoff_s, BASE_BACKOFF_S * 2.0 ** min(self.failures - 1, 62))
        return self._jitter() * ceiling

    def _attempt(self) -> bool | None:
        """Send the pending or the next batch: None if the spool is empty, else success."""
        batch = self._pending or self.spool.read_batch(self.batch_size)
        if batch is None:
            return None
        if not batch.lines:  # only corrupt records, already logged by the spool
            self.spool.ack(batch)
            return True
        self._pending = batch
        try:
            rejected = self._send_salvaging(batch.lines)
        except AuthError as exc:
            reason = str(exc)
            self._failed(
                reason,
                logging.ERROR,
                lambda kept: (
                    f"{self.name}: the server refused the credentials ({reason}); keeping "
                    f"{kept} line(s) and retrying every {self.max_backoff_s:g} s: "
                    f"check the token in [{self.name}]"
                ),
                auth=True,
            )
            return False
        except RetryableError as exc:
            reason = str(exc)
            self._failed(
                reason,
                logging.WARNING,
                lambda kept: (
                    f"{self.name}: delivery failed ({reason}); keeping {kept} line(s), "
                    "retrying with backoff"
                ),
            )
            return False
        except Exception as exc:  # a bug or an unwrapped error must not kill the sender
            message = f"{type(exc).__name__}: {exc}"
            self._failed(
                message,
                logging.ERROR,
                lambda kept: (
                    f"{self.name}: unexpected error while sending ({message}); "
                    f"keeping {kept} line(s), retrying with backoff"
                ),
            )
            return False
        self._pending = None
        self.spool.ack(batch)
        delivered = len(batch.lines) - rejected
        self.sent_lines += delivered
        self.rejected_lines += rejected
        self.last_success = self._wall_clock()
        if self.failures:
            log.info(
                "%s: delivered %d lines after %d failures", self.name, delivered, self.failures
            )
        self.failures = 0
        self._auth_failing = False
        self._logged = None
        return True

    def _failed(
        self, message: str, level: int, describe: Callable[[int], str], auth: bool = False
    ) -> None:
        self.failures += 1
        self.retries += 1
        self.last_error = message
        self._auth_failing = auth
        if message != self._logged:
            log.log(level, "%s", describe(self.backlog_lines))
            self._logged = message

    def _send_salvaging(self, lines: Sequence[str]) -> int:
        """Send ``lines``; when refused, bisect to deliver the good ones. Returns rejects."""
        try:
            self.sink.send(lines)
            return 0
        except RejectedError as exc:
            log.error(
                "%s: the server rejected a batch of %d line(s): %s; first line: %s",
                self.name,
                len(lines),
                exc,
                lines[0][:_LINE_PREVIEW],
            )
            if len(lines) == 1:
                return 1
        bisect = _Bisection(self.sink.send)
        mid = len(lines) // 2
        bisect.run(lines[:mid])
        bisect.run(lines[mid:])
        if bisect.gave_up:
            log.error(
                "%s: gave up bisecting after %d requests; dropped the rest of the batch",
                self.name,
                MAX_BISECT_SENDS,
            )
        if bisect.refused:
            log.error(
                "%s: dropped %d rejected line(s) of %d; first: %s",
                self.name,
                len(bisect.refused),
                len(lines),
                bisect.refused[0][:_LINE_PREVIEW],
            )
        return len(bisect.refused)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.step()
            except Exception as exc:  # the spool itself failed (disk full, I/O error)
                message = f"spool: {type(exc).__name__}: {exc}"
                if message != self._logged:
                    log.error("%s: %s", self.name, message)
                    self._logged = message
                self.last_error = message
                delay = self.max_backoff_s
            if delay > 0:
                self._wait(delay, backing_off=self.failures > 0)

    def _wait(self, seconds: float, backing_off: bool) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        elif backing_off:
            self._stop.wait(seconds)
        else:
            self._wake.wait(seconds)
            self._wake.clear()


class _Bisection:
    """Sends halves of a rejected batch recursively, collecting the lines refused alone."""

    def __init__(self, send: Callable[[Sequence[str]], None]) -> None:
        self.send = send
        self.sends_left = MAX_BISECT_SENDS
        self.refused: list[str] = []
        self.gave_up = False

    def run(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        if self.sends_left <= 0:
            self.gave_up = True
            self.refused.extend(lines)
            return
        self.sends_left -= 1
        try:
            self.send(lines)
        except RejectedError:
            if len(lines) == 1:
                self.refused.extend(lines)
                return
            mid = len(lines) // 2
            self.run(lines[:mid])
            self.run(lines[mid:])
