"""A sink that turns intervals into line protocol, spools them and lets a runner send them.

``write`` only converts and appends to the spool (one write to the kernel), so the
sampling loop never waits on the network; the ``SpoolRunner`` delivers in the
background and ``close`` gives it a deadline to flush.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.records import IntervalResult
from exporters.points import interval_points
from exporters.process_rows import DEFAULT_MAX_NAMES_PER_DAY, ProcessRows
from exporters.runner import SpoolRunner
from exporters.spool import Spool

DEFAULT_STOP_DEADLINE_S = 5.0


class SpooledSink:
    """The ``Sink`` in front of one network sink: spool on write, send in the background."""

    def __init__(
        self,
        name: str,
        spool: Spool,
        runner: SpoolRunner,
        top_n: int = 20,
        stop_deadline_s: float = DEFAULT_STOP_DEADLINE_S,
        max_process_names_per_day: int = DEFAULT_MAX_NAMES_PER_DAY,
    ) -> None:
        self.name = name
        self.spool = spool
        self.runner = runner
        self.top_n = top_n
        self.process_rows = ProcessRows(top_n, max_process_names_per_day)  # state across writes
        self.stop_deadline_s = stop_deadline_s

    def open(self) -> None:
        """Start the sender; what earlier runs left in the spool is sent first."""
        self.runner.start()

    def write(self, batch: Sequence[IntervalResult]) -> None:
        """Append the intervals' points to the spool; wake the sender on a full batch."""
        rows = self.process_rows
        lines = [p.to_line() for r in batch for p in interval_points(r, self.top_n, rows)]
        self.spool.append(lines)
        if self.spool.pending_lines() >= self.runner.batch_size:
            self.runner.wake()

    def close(self) -> None:
        """Flush within the deadline, then close the network sink and the spool."""
        try:
            self.runner.stop(self.stop_deadline_s)
        finally:
            try:
                self.runner.sink.close()
            finally:
                self.spool.close()
