"""A sink that keeps intervals in a list: the test double for every other sink."""

from __future__ import annotations

from collections.abc import Sequence

from agent.records import IntervalResult


class MemorySink:
    """Appends every interval it is given to ``intervals``."""

    name = "memory"

    def __init__(self) -> None:
        self.intervals: list[IntervalResult] = []
        self.closed = False

    def open(self) -> None:
        self.closed = False

    def write(self, batch: Sequence[IntervalResult]) -> None:
        self.intervals.extend(batch)

    def close(self) -> None:
        self.closed = True
