"""``sci-agent greenest-window``: when to start a job of a given length to emit the least.

The series searched is the intensity now, holding until the forecast's first point
after now, then the forecast (see ``agent.grid.forecast`` for how a forecast is read and
why the search is exact for any start time). The intensity now is the forecast's own
point covering now where it has one (UK grid, Electricity Maps and WattTime forecasts
start with the current slot), else the chain's current value (the ``csv`` provider's
latest row at or before now). A window starts at or after now and ends by
``now + within`` (the job is done within ``within``); a forecast that stops earlier is
used as far as it goes, and the plan says how far.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from agent.config_check import ConfigError
from agent.grid import build_chain
from agent.grid.chain import IntensityChain
from agent.grid.command import override
from agent.grid.forecast import Forecast, Window, chain_forecast, forecast_end, greenest_window
from agent.grid.forecast import window_mean as mean_over
from agent.records import IntensityValue, utc_now

if TYPE_CHECKING:
    from agent.config import GridConfig

#: How long the command waits for the forecast (each provider also has grid.timeout_s).
FORECAST_TIMEOUT_S = 30.0
EXIT_NO_FORECAST = 1
EXIT_USAGE = 2

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str) -> timedelta:
    """``90m``, ``2h``, ``1d``, ``45s`` or plain seconds (``3600``) → a positive timedelta.

    Raises ``ConfigError`` (a ``ValueError``) naming ``option``.
    """
    match = _DURATION.match(text.strip().lower())
    seconds = float(match.group(1)) * _SECONDS[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise ConfigError(
            f"{option}: expected a positive duration like 90m, 2h, 1d or 3600 (seconds), "
            f"got {text!r}"
        )
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Plan:
    """The greenest window found, with the figures to judge it by."""

    zone: str
    provider: str  # whose forecast
    now: datetime
    now_gco2_per_kwh: float  # the intensity now
    now_provider: str  # whose value that is
    now_window_gco2_per_kwh: float  # the mean over the window starting now
    best: Window
    duration: timedelta
    until: datetime  # now + within: the latest end asked for
    forecast_until: datetime  # when the forecast's last value stops holding

    @property
    def savings_pct(self) -> float:
        """How much less the best window emits than starting now, in percent."""
        if self.now_window_gco2_per_kwh <= 0:
            return 0.0
        saved = self.now_window_gco2_per_kwh - self.best.mean_gco2_per_kwh
        return 100.0 * saved / self.now_window_gco2_per_kwh

    @property
    def covers_within(self) -> bool:
        """Whether the forecast reaches the end of the horizon asked for."""
        return self.forecast_until >= self.until

    def to_dict(self) -> dict[str, object]:
        """The ``--json`` object."""
        return {
            "zone": self.zone,
            "provider": self.provider,
            "now": _iso(self.now),
            "start": _iso(self.best.start),
            "end": _iso(self.best.end),
            "duration_s": self.duration.total_seconds(),
            "avg_gco2_per_kwh": round(self.best.mean_gco2_per_kwh, 3),
            "now_gco2_per_kwh": round(self.now_gco2_per_kwh, 3),
            "now_provider": self.now_provider,
            "now_window_avg_gco2_per_kwh": round(self.now_window_gco2_per_kwh, 3),
            "savings_pct": round(self.savings_pct, 2),
            "wait_s": round(max(0.0, (self.best.start - self.now).total_seconds())),
            "within_until": _iso(self.until),
            "forecast_until": _iso(self.forecast_until),
            "forecast_covers_within": self.covers_within,
        }


def plan_window(
    now: datetime,
    current: IntensityValue,
    forecast: Sequence[IntensityValue],
    duration: timedelta,
    within: timedelta,
) -> Plan | str:
    """The greenest window of ``duration`` in ``[now, now + within]``, or why there is none."""
    points = sorted(forecast, key=lambda v: v.time)
    if not points:
        return "the forecast is empty"
    until = now + within
    reach = forecast_end([v.time for v in points])
    past = [v for v in points if v.time <= now]
    future = [v for v in points if v.time > now]
    if not future or reach <= now:
        return f"the forecast ends before now (last value for {short_time(points[-1].time)})"
    at_now = past[-1] if past else current
    times = [now, *(v.time for v in future)]
    values = [at_now.gco2_per_kwh, *(v.gco2_per_kwh for v in future)]
    best = greenest_window(times, values, duration, earliest=now, latest=until - duration)
    starting_now = mean_over(times, values, now, duration)
    if best is None or starting_now is None:
        return (
            f"the forecast reaches only until {short_time(reach)}, less than the "
            f"{span(duration)} asked for from now"
        )
    provider = future[0].provider
    return Plan(
        current.zone, provider, now, at_now.gco2_per_kwh, at_now.provider, starting_now, best,
        duration,
        until, reach,
    )  # fmt: skip


def greenest_window_command(
    config: GridConfig,
    zone: str | None,
    region: str | None,
    duration: timedelta,
    within: timedelta,
    as_json: bool,
) -> tuple[str, int]:
    """Fetch the chain's value and forecast, plan, and return ``(text, exit code)``.

    Exit 0 with a plan, 1 when there is no usable forecast (the text says which providers
    were tried and which can forecast). Bad options raise ``ConfigError``.
    """
    if duration > within:
        raise ConfigError(f"--duration ({span(duration)}) is longer than --within ({span(within)})")
    chain = build_chain(override(config, zone, region))
    now, current, fc = fetch(chain)
    if not fc.values:
        return f"no forecast for {fc.zone}: {fc.note}", EXIT_NO_FORECAST
    plan = plan_window(now, current, fc.values, duration, within)
    if isinstance(plan, str):
        return f"no window for {fc.zone}: {plan}", EXIT_NO_FORECAST
    if as_json:
        return json.dumps(plan.to_dict(), indent=2), 0
    return describe_plan(plan), 0


def fetch(chain: IntensityChain) -> tuple[datetime, IntensityValue, Forecast]:
    """The time, the chain's value now (fetched) and its forecast."""
    chain.refresh(force=True)
    current = chain.current()
    fc = chain_forecast(chain, FORECAST_TIMEOUT_S)
    return utc_now(), current, fc


def describe_plan(plan: Plan) -> str:
    """The plan in a few lines."""
    best = plan.best
    wait = best.start - plan.now
    when = "now" if wait.total_seconds() < 1 else f"in {span(wait)}"
    lines = [
        f"Greenest {span(plan.duration)} window in {plan.zone} ending by "
        f"{short_time(plan.until)} (forecast: {plan.provider}, "
        f"until {short_time(plan.forecast_until)})",
        f"  start    {short_time(best.start)}  ({when})",
        f"  end      {short_time(best.end)}",
        f"  average  {best.mean_gco2_per_kwh:.0f} gCO2e/kWh over the window",
        f"  now      {plan.now_gco2_per_kwh:.0f} gCO2e/kWh "
        f"from {plan.now_provider} (starting now: {plan.now_window_gco2_per_kwh:.0f} "
        "gCO2e/kWh on average)",
        f"  saving   {plan.savings_pct:.1f} % by starting at the window instead of now",
    ]
    if not plan.covers_within:
        covered = plan.forecast_until - plan.now
        lines.append(
            f"  note     the forecast reaches only until {short_time(plan.forecast_until)}: "
            f"windows were searched in the {span(covered)} it covers, not the "
            f"{span(plan.until - plan.now)} asked"
        )
    return "\n".join(lines)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def short_time(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC"


def span(delta: timedelta) -> str:
    """``2 h``, ``90 min``, ``1 d 2 h``, ``45 s``."""
    seconds = round(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 120 and minutes % 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if minutes else []
    return " ".join(parts) or "0 s"
