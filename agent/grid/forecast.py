"""A chain's forecast, and the window of a given length with the lowest mean intensity.

A forecast is a step function: each value holds from its time until the next value's,
and the last one for the median step between values. The mean of a window is
time-weighted over that function. As the start of a window slides, its mean changes
linearly between the moments when its start or its end crosses a step, so the lowest
mean is always found at one of those moments or at a bound: ``greenest_window`` tries
exactly those starts, which makes it exact for any start time, not only the forecast's
points (ties go to the earliest start).
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING

from agent.grid import build_chain
from agent.grid.chain import IntensityChain
from agent.records import IntensityValue

if TYPE_CHECKING:
    from agent.config import GridConfig

#: Providers whose API (or file) gives future values.
FORECASTING = ("electricitymaps", "ukgrid", "watttime", "carbonaware", "csv")
_TIE = 1e-9  # gCO2e/kWh: means closer than this are equal, and the earlier start wins


@dataclass(frozen=True)
class Window:
    """The lowest-average window of a forecast."""

    start: datetime
    end: datetime
    mean_gco2_per_kwh: float


@dataclass(frozen=True)
class Forecast:
    """A chain's forecast, or why there is none (``providers``: those tried, in order)."""

    zone: str
    values: tuple[IntensityValue, ...]
    note: str | None = None  # set when ``values`` is empty
    providers: tuple[str, ...] = ()


def fetch_forecast(grid: GridConfig, timeout_s: float = 4.0) -> Forecast:
    """``build_chain(grid).forecast()`` in a thread; gives up after ``timeout_s``."""
    try:
        chain = build_chain(grid)
    except ValueError as exc:  # ConfigError, a bad zone
        return Forecast("?", (), f"the grid config is not usable: {exc}")
    return chain_forecast(chain, timeout_s)


def chain_forecast(chain: IntensityChain, timeout_s: float) -> Forecast:
    """``chain.forecast()`` sorted by time, run in a thread given up after ``timeout_s``."""
    box: list[list[IntensityValue]] = []
    errors: list[str] = []

    def work() -> None:
        try:
            box.append(chain.forecast())
        except Exception as exc:  # forecast() logs provider errors itself
            errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=work, name="sci-agent-forecast", daemon=True)
    thread.start()
    thread.join(timeout_s)
    tried = tuple(chain.providers)
    providers = ", ".join(tried)
    if thread.is_alive():
        note = f"the providers ({providers}) did not answer in {timeout_s:g} s"
        return Forecast(chain.zone, (), note, tried)
    if errors:
        return Forecast(chain.zone, (), f"the forecast failed: {errors[0]}", tried)
    values = tuple(sorted(box[0], key=lambda v: v.time)) if box else ()
    if not values:
        failed = "".join(f"; {name} failed: {why}" for name, why in chain.forecast_errors.items())
        note = (
            f"none of the configured providers ({providers}) gives a forecast for {chain.zone}"
            f"{failed}; {', '.join(FORECASTING)} can"
        )
        return Forecast(chain.zone, (), note, tried)
    return Forecast(chain.zone, values, None, tried)


def _ends(times: list[datetime]) -> list[datetime]:
    """When each value stops holding: the next time; the median step after the last."""
    steps = [(b - a).total_seconds() for a, b in pairwise(times)]
    last_step = statistics.median(steps) if steps else 3600.0
    return [*times[1:], times[-1] + timedelta(seconds=last_step)]


def forecast_end(times: list[datetime]) -> datetime:
    """When the last value of a forecast stops holding (see ``_ends``)."""
    return _ends(times)[-1]


def window_mean(
    times: list[datetime], values: list[float], start: datetime, length: timedelta
) -> float | None:
    """The time-weighted mean over ``[start, start + length)``; None if it leaves the forecast."""
    if not times or len(times) != len(values):
        return None
    ends = _ends(times)
    stop = start + length
    if start < times[0] or stop > ends[-1] or length.total_seconds() <= 0:
        return None
    area = 0.0
    for t0, t1, value in zip(times, ends, values, strict=True):
        lo, hi = max(t0, start), min(t1, stop)
        if hi > lo:
            area += value * (hi - lo).total_seconds()
    return area / length.total_seconds()


def greenest_window(
    times: list[datetime],
    values: list[float],
    length: timedelta,
    *,
    earliest: datetime | None = None,
    latest: datetime | None = None,
) -> Window | None:
    """The window of ``length`` with the lowest time-weighted mean (see the module).

    It starts no earlier than ``earliest`` (default: the first point) and no later than
    ``latest`` (default: as late as the forecast allows), and fits inside the forecast.
    None if no window fits.
    """
    if not times or len(times) != len(values) or length.total_seconds() <= 0:
        return None
    ends = _ends(times)
    first = max(times[0], earliest) if earliest is not None else times[0]
    last = ends[-1] - length
    if latest is not None:
        last = min(last, latest)
    if last < first:
        return None
    starts = {first, last}
    starts.update(t for t in times if first <= t <= last)
    starts.update(t - length for t in ends if first <= t - length <= last)
    best: Window | None = None
    for start in sorted(starts):
        mean = window_mean(times, values, start, length)
        if mean is None:
            continue
        if best is None or mean < best.mean_gco2_per_kwh - _TIE:
            best = Window(start, start + length, mean)
    return best
