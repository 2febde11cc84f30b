"""The interface every sink implements: open, write a batch of intervals, close."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agent.records import IntervalResult


class Sink(Protocol):
    """Receives whole intervals; ``write`` gets one batch per sampling cycle."""

    name: str

    def open(self) -> None: ...

    def write(self, batch: Sequence[IntervalResult]) -> None: ...

    def close(self) -> None: ...
