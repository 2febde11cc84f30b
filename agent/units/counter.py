"""Functional units (the R of SCI) counted per application, per interval.

Counts arrive from the local HTTP endpoint, from Prometheus scrapes and from
in-process callers, on any thread. ``take()`` hands the cycle the counts since the
previous cycle; ``totals()`` keeps the running sums for status output.

``take()`` is sparse: an app that counted nothing this interval is absent from the
result (callers read ``units.get(app, 0.0)``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping

#: Largest count accepted in one report; keeps the running sums finite.
MAX_COUNT = 1e15


class UnitError(ValueError):
    """A unit report that cannot be counted; ``field`` names the offending field."""

    def __init__(self, field: str, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.index = index  # position in a batch, when the report came in one


class UnitCounter:
    """Thread-safe counts of functional units per app.

    ``app_units`` maps each app name to its configured unit; an app mapped to
    ``None`` is known but has no unit, so reports for it are refused.
    """

    def __init__(self, app_units: Mapping[str, str | None]) -> None:
        self._units: dict[str, str | None] = dict(app_units)
        self._lock = threading.Lock()
        self._interval: dict[str, float] = {}
        self._totals: dict[str, float] = {}

    @property
    def app_units(self) -> dict[str, str]:
        """App name → unit, for the apps that count one."""
        return {app: unit for app, unit in self._units.items() if unit is not None}

    def set_apps(self, app_units: Mapping[str, str | None]) -> None:
        """Know these apps from now on (a reload); counts and totals so far are kept."""
        with self._lock:
            self._units = dict(app_units)

    def check(self, app: object, unit: object, count: object) -> float:
        """Validate one report without counting it; return the count as a float."""
        if not isinstance(app, str):
            raise UnitError("app", f"app must be a string, got {kind_of(app)}")
        if app not in self._units:
            configured = ", ".join(sorted(self.app_units)) or "none"
            raise UnitError(
                "app",
                f"app {app[:80]!r} is not configured; configured apps with a unit: {configured}",
            )
        expected = self._units[app]
        if expected is None:
            raise UnitError(
                "app", f"app {app!r} has no unit configured (set unit in its [[apps]] rule)"
            )
        if not isinstance(unit, str):
            raise UnitError("unit", f"unit must be a string, got {kind_of(unit)}")
        if unit != expected:
            raise UnitError("unit", f"app {app!r} counts {expected!r}, not {unit[:80]!r}")
        if isinstance(count, bool) or not isinstance(count, int | float):
            raise UnitError("count", f"count must be a number, got {kind_of(count)}")
        try:
            value = float(count)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise UnitError("count", f"count must be a finite number, got {_short(count)}")
        if value < 0:
            raise UnitError("count", f"count must be 0 or more, got {_short(count)}")
        if value > MAX_COUNT:
            raise UnitError("count", f"count must be at most {MAX_COUNT:g}, got {_short(count)}")
        return value

    def add(self, app: str, unit: str, count: int | float) -> None:
        """Count ``count`` units for ``app``; raise ``UnitError`` and count nothing if invalid."""
        self.add_many([(app, unit, count)])

    def add_many(self, reports: Iterable[tuple[str, str, int | float]]) -> None:
        """Count several reports all-or-nothing: every one is checked before any is counted.

        A ``UnitError`` raised here carries ``index``, the position of the bad report.
        """
        checked: list[tuple[str, float]] = []
        for index, (app, unit, count) in enumerate(reports):
            try:
                checked.append((app, self.check(app, unit, count)))
            except UnitError as exc:
                exc.index = index
                raise
        with self._lock:
            for app, value in checked:
                self._interval[app] = self._interval.get(app, 0.0) + value
                self._totals[app] = self._totals.get(app, 0.0) + value

    def take(self) -> dict[str, float]:
        """Counts per app since the previous ``take()``, resetting them atomically."""
        with self._lock:
            taken, self._interval = self._interval, {}
        return taken

    def give_back(self, taken: Mapping[str, float]) -> None:
        """Return counts a failed cycle took, so the next ``take()`` has them again."""
        with self._lock:
            for app, value in taken.items():
                self._interval[app] = self._interval.get(app, 0.0) + value

    def totals(self) -> dict[str, float]:
        """Running totals per app since the counter was created."""
        with self._lock:
            return dict(self._totals)


def kind_of(value: object) -> str:
    """A JSON name for the type of ``value``, for error messages ("a string", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(value: object) -> str:
    """``repr(value)`` cut to 40 characters (an int too long to print says so)."""
    try:
        text = repr(value)
    except ValueError:  # int beyond sys.get_int_max_str_digits()
        return "an integer with too many digits"
    return text if len(text) <= 40 else text[:37] + "..."
