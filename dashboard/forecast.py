"""The grid's forecast from the agent's intensity chain, and its greenest window."""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from agent.config import GridConfig
from agent.grid import build_chain
from agent.records import IntensityValue


@dataclass(frozen=True)
class Window:
    """The lowest-average window of a forecast."""

    start: datetime
    end: datetime
    mean_gco2_per_kwh: float


@dataclass(frozen=True)
class Forecast:
    """A chain's forecast, or why there is none."""

    zone: str
    values: tuple[IntensityValue, ...]
    note: str | None = None  # set when ``values`` is empty


def fetch_forecast(grid: GridConfig, timeout_s: float = 4.0) -> Forecast:
    """``build_chain(grid).forecast()`` in a thread; gives up after ``timeout_s``."""
    try:
        chain = build_chain(grid)
    except ValueError as exc:  # ConfigError, a bad zone
        return Forecast("?", (), f"the grid config is not usable: {exc}")
    box: list[list[IntensityValue]] = []
    errors: list[str] = []

    def work() -> None:
        try:
            box.append(chain.forecast())
        except Exception as exc:  # forecast() logs provider errors itself
            errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=work, name="dashboard-forecast", daemon=True)
    thread.start()
    thread.join(timeout_s)
    providers = ", ".join(chain.providers)
    if thread.is_alive():
        return Forecast(
            chain.zone, (), f"the providers ({providers}) did not answer in {timeout_s:g} s"
        )
    if errors:
        return Forecast(chain.zone, (), f"the forecast failed: {errors[0]}")
    values = tuple(sorted(box[0], key=lambda v: v.time)) if box else ()
    if not values:
        return Forecast(
            chain.zone,
            (),
            f"none of the configured providers ({providers}) gives a forecast for {chain.zone}; "
            "electricitymaps, ukgrid, watttime, carbonaware and csv can",
        )
    return Forecast(chain.zone, values)


def _ends(times: list[datetime]) -> list[datetime]:
    """When each value stops holding: the next time; the median step after the last."""
    steps = [(b - a).total_seconds() for a, b in pairwise(times)]
    last_step = statistics.median(steps) if steps else 3600.0
    return [*times[1:], times[-1] + timedelta(seconds=last_step)]


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


def greenest_window(times: list[datetime], values: list[float], length: timedelta) -> Window | None:
    """The window of ``length`` with the lowest time-weighted mean.

    Each value holds until the next one; the last holds for the median step. Windows
    start at a forecast point and must fit inside the forecast. None if none fits.
    """
    best: Window | None = None
    for start in times:
        mean = window_mean(times, values, start, length)
        if mean is None:
            continue
        if best is None or mean < best.mean_gco2_per_kwh - 1e-12:
            best = Window(start, start + length, mean)
    return best
