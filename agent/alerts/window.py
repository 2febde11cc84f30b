"""The recent intervals, reduced to what alert rules read, and their window sums.

``summarize`` keeps from an ``IntervalResult`` only the host's joules, the grid
intensity and each app's joules, carbon and units. ``MetricWindow`` folds them into one
ring of buckets per window length that rules use, each ring at most ``BUCKETS``
buckets long, so memory and the cost of a sum do not grow with the window:

- a window of up to ``1.5 × BUCKETS`` intervals keeps each interval in its own bucket:
  its sums are exact over the intervals that ended inside it, (now − window, now];
- a longer window merges intervals into buckets of window ÷ ``BUCKETS`` seconds, and
  counts a bucket when its first interval ended inside the window: the window is then
  exact to within one bucket (1/120 of its length) at its old end.

Aggregates are ratios of sums: power is Σ joules ÷ Σ seconds, SCI is Σ carbon ÷ Σ
units, intensity is weighted by time; never a mean of per-interval ratios.
"""

from __future__ import annotations

import logging
import threading
from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.records import IntervalResult


@dataclass(frozen=True, slots=True)
class AppTotals:
    """One app's numbers for one interval (or summed over a window)."""

    joules: float = 0.0  # dynamic plus its static share
    carbon_g: float = 0.0  # operational plus embodied
    units: float = 0.0
    unit: str | None = None


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


BUCKETS = 120
MAX_APPS = 2000  # distinct apps a window tracks; later ones are summed as OVERFLOW
OVERFLOW = "_overflow"
_FIELDS = 4  # per app and bucket: joules, carbon_g, units, intervals

log = logging.getLogger("sci_agent.alerts")


class _Bucket:
    """Sums over consecutive intervals: the host's, and ``_FIELDS`` numbers per app."""

    __slots__ = (
        "first_end",
        "host_joules",
        "i_seconds",
        "i_weighted",
        "intervals",
        "seconds",
        "values",
    )

    def __init__(self, first_end: float) -> None:
        self.first_end = first_end
        self.intervals = 0
        self.seconds = self.host_joules = self.i_seconds = self.i_weighted = 0.0
        self.values = array("d")

    def add(self, s: IntervalSummary, slots: Iterable[tuple[int, AppTotals]]) -> None:
        self.intervals += 1
        self.seconds += s.seconds
        self.host_joules += s.host_joules
        if s.gco2_per_kwh is not None:
            self.i_seconds += s.seconds
            self.i_weighted += s.gco2_per_kwh * s.seconds
        values = self.values
        for slot, totals in slots:
            at = slot * _FIELDS
            if len(values) <= at:
                values.extend([0.0] * (at + _FIELDS - len(values)))
            values[at] += totals.joules
            values[at + 1] += totals.carbon_g
            values[at + 2] += totals.units
            values[at + 3] += 1


class _Ring:
    """The buckets of one window length."""

    def __init__(self, window_s: float, interval_s: float) -> None:
        self.window_s = window_s
        width = window_s / BUCKETS
        self.width = width if width >= 1.5 * interval_s else 0.0  # 0: one interval each
        self.buckets: deque[_Bucket] = deque()

    def add(self, s: IntervalSummary, slots: list[tuple[int, AppTotals]]) -> None:
        last = self.buckets[-1] if self.buckets else None
        if last is None or s.end - last.first_end >= self.width:
            last = _Bucket(s.end)
            self.buckets.append(last)
        last.add(s, slots)
        while self.buckets and self.buckets[0].first_end <= s.end - self.window_s:
            self.buckets.popleft()

    def sums(self, now: float) -> tuple[list[_Bucket], int]:
        """The buckets counted at ``now``, and the longest values array among them."""
        start = now - self.window_s
        chosen = [b for b in self.buckets if start < b.first_end <= now]
        return chosen, max((len(b.values) for b in chosen), default=0)


class MetricWindow:
    """A ring per window length; thread-safe (the loop adds, the engine sums)."""

    def __init__(self, windows: Iterable[float], interval_s: float) -> None:
        self.interval_s = interval_s
        self._rings: dict[float, _Ring] = {}
        self._slots: dict[str, int] = {}
        self._names: list[str] = []
        self._units: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self.set_windows(windows)

    def set_windows(self, windows: Iterable[float]) -> None:
        """Keep the rings of these lengths (existing ones with their data), drop others."""
        with self._lock:
            self._rings = {
                w: self._rings.get(w) or _Ring(w, self.interval_s) for w in sorted(set(windows))
            }

    def add(self, summaries: Iterable[IntervalSummary]) -> None:
        """Fold intervals (in time order) into every ring."""
        with self._lock:
            for summary in summaries:
                slots = []
                for app, t in summary.apps.items():
                    slots.append((self._slot(app), t))
                    if t.unit is not None:
                        self._units[app] = t.unit
                for ring in self._rings.values():
                    ring.add(summary, slots)

    def buckets(self) -> int:
        """Buckets held, all rings together (for the benchmark and tests)."""
        with self._lock:
            return sum(len(r.buckets) for r in self._rings.values())

    def totals(self, window_s: float, now: float) -> WindowTotals:
        """Sums over the intervals that ended in (now − window_s, now] (see the module)."""
        with self._lock:
            ring = self._rings.get(window_s)
            if ring is None:
                raise KeyError(f"no ring for a window of {window_s:g} s")
            chosen, size = ring.sums(now)
            acc = array("d", bytes(8 * size))
            for b in chosen:
                for i, v in enumerate(b.values):
                    acc[i] += v
            names = list(self._names)
            units = dict(self._units)
        apps = {
            name: AppTotals(acc[at], acc[at + 1], acc[at + 2], units.get(name))
            for slot, name in enumerate(names)
            if (at := slot * _FIELDS) < size and acc[at + 3] > 0
        }
        return WindowTotals(
            intervals=sum(b.intervals for b in chosen),
            seconds=sum(b.seconds for b in chosen),
            host_joules=sum(b.host_joules for b in chosen),
            intensity_seconds=sum(b.i_seconds for b in chosen),
            intensity_weighted=sum(b.i_weighted for b in chosen),
            apps=apps,
        )

    def _slot(self, app: str) -> int:
        slot = self._slots.get(app)
        if slot is None:
            if len(self._names) >= MAX_APPS and app != OVERFLOW:
                if OVERFLOW not in self._slots:
                    log.warning(
                        "alerts: more than %d apps; later ones are summed as %s", MAX_APPS, OVERFLOW
                    )
                return self._slot(OVERFLOW)
            slot = self._slots[app] = len(self._names)
            self._names.append(app)
        return slot
