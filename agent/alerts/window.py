"""The recent intervals, reduced to what alert rules read, and their window aggregates.

``summarize`` keeps from an ``IntervalResult`` only the host's joules, the grid
intensity and each app's joules, carbon and units (a few numbers per app), so a day of
5-second intervals fits in memory. Aggregates over a window are ratios of sums: power
is Σ joules ÷ Σ seconds, SCI is Σ carbon ÷ Σ units, intensity is weighted by time;
never a mean of per-interval ratios. An interval counts in a window when it ended
inside it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import takewhile

from agent.records import IntervalResult


@dataclass(frozen=True, slots=True)
class AppTotals:
    """One app's numbers for one interval (or summed over a window)."""

    joules: float = 0.0  # dynamic plus its static share
    carbon_g: float = 0.0  # operational plus embodied
    units: float = 0.0
    unit: str | None = None

    def plus(self, other: AppTotals) -> AppTotals:
        return AppTotals(
            self.joules + other.joules,
            self.carbon_g + other.carbon_g,
            self.units + other.units,
            other.unit or self.unit,
        )


@dataclass(frozen=True, slots=True)
class IntervalSummary:
    """What alert rules need from one interval."""

    end: float  # Unix time the interval ended
    seconds: float
    host_joules: float
    gco2_per_kwh: float | None
    apps: Mapping[str, AppTotals] = field(default_factory=dict)


def summarize(result: IntervalResult) -> IntervalSummary:
    """The alert-relevant numbers of ``result``."""
    apps: dict[str, AppTotals] = {}
    for app in (*result.apps, result.idle, result.unattributed):
        apps[app.app] = AppTotals(joules=app.total_joules)
    for record in result.sci:
        known = apps.get(record.app, AppTotals())
        apps[record.app] = AppTotals(known.joules, record.carbon_g, record.units, record.unit)
    seconds = (result.end - result.start).total_seconds()
    intensity = result.intensity.gco2_per_kwh if result.intensity is not None else None
    return IntervalSummary(
        end=result.end.timestamp(),
        seconds=max(seconds, 0.0),
        host_joules=sum(c.joules for c in result.components),
        gco2_per_kwh=intensity,
        apps=apps,
    )


@dataclass(frozen=True, slots=True)
class WindowTotals:
    """Sums over the intervals that ended in one window."""

    intervals: int
    seconds: float
    host_joules: float
    intensity_seconds: float  # seconds with a known intensity
    intensity_weighted: float  # Σ intensity × seconds
    apps: Mapping[str, AppTotals]

    @property
    def host_watts(self) -> float | None:
        return self.host_joules / self.seconds if self.seconds > 0 else None

    @property
    def gco2_per_kwh(self) -> float | None:
        if self.intensity_seconds <= 0:
            return None
        return self.intensity_weighted / self.intensity_seconds

    def app_watts(self, app: str) -> float | None:
        totals = self.apps.get(app)
        if totals is None or self.seconds <= 0:
            return None
        return totals.joules / self.seconds

    def sci(self, app: str) -> float | None:
        """Σ carbon ÷ Σ units; None when the app counted no unit in the window."""
        totals = self.apps.get(app)
        if totals is None or totals.units <= 0:
            return None
        return totals.carbon_g / totals.units


class MetricWindow:
    """The intervals of the last ``keep_s`` seconds; thread-safe (the loop appends)."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._intervals: deque[IntervalSummary] = deque()
        self._lock = threading.Lock()

    def add(self, summaries: Iterable[IntervalSummary]) -> None:
        """Append intervals (in time order) and forget those older than ``keep_s``."""
        with self._lock:
            for summary in summaries:
                self._intervals.append(summary)
            if self._intervals:
                oldest = self._intervals[-1].end - self.keep_s
                while self._intervals and self._intervals[0].end <= oldest:
                    self._intervals.popleft()

    def __len__(self) -> int:
        return len(self._intervals)

    def totals(self, window_s: float, now: float) -> WindowTotals:
        """Sums over the intervals that ended in (now − window_s, now]."""
        start = now - window_s
        with self._lock:
            chosen = list(takewhile(lambda s: s.end > start, reversed(self._intervals)))
        apps: dict[str, AppTotals] = {}
        seconds = joules = i_seconds = i_weighted = 0.0
        for summary in chosen:
            seconds += summary.seconds
            joules += summary.host_joules
            if summary.gco2_per_kwh is not None:
                i_seconds += summary.seconds
                i_weighted += summary.gco2_per_kwh * summary.seconds
            for app, totals in summary.apps.items():
                known = apps.get(app)
                apps[app] = totals if known is None else known.plus(totals)
        return WindowTotals(len(chosen), seconds, joules, i_seconds, i_weighted, apps)
