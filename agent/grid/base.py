"""The one interface every grid carbon intensity provider implements, and its error."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Protocol

from agent.records import IntensityValue, Signal

#: Values outside 0..this (gCO2e/kWh) are provider errors; the dirtiest grids are ~1,200.
MAX_GCO2_PER_KWH = 5000.0
#: How far past the clock a current value may be timed (clock skew, a slot starting soon).
MAX_AHEAD = timedelta(minutes=15)
#: How far past the clock a forecast may reach (the APIs give 1 to 3 days).
MAX_FORECAST_AHEAD = timedelta(days=8)


class ProviderError(Exception):
    """A provider could not give a value; the message names the cause, never a credential."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message


class HttpStatusError(ProviderError):
    """The API answered with an HTTP error status (kept so callers can react to 401)."""

    def __init__(self, provider: str, message: str, status: int) -> None:
        super().__init__(provider, message)
        self.status = status


class Provider(Protocol):
    """Gives the grid carbon intensity of a zone.

    ``fetch`` returns the current value or raises ``ProviderError``; it may block on the
    network for up to the configured timeout, so only the chain's background refresh calls
    it. ``ttl_s`` is how long a fetched value stays current (``inf`` for local data);
    ``remote`` is false for providers that only read local data, which the chain fetches
    synchronously when it is built. ``forecast`` returns future values where the source
    has them; subclasses without one inherit the empty default.
    """

    name: str
    signal: Signal
    ttl_s: float
    remote: bool

    def fetch(self, zone: str) -> IntensityValue: ...

    def forecast(self, zone: str) -> list[IntensityValue]:
        """Future values, oldest first; none by default."""
        del zone
        return []


def out_of_range(gco2_per_kwh: float) -> str | None:
    """Why ``gco2_per_kwh`` is not a plausible grid intensity, or None when it is."""
    if not math.isfinite(gco2_per_kwh):
        return f"{gco2_per_kwh} is not a finite number"
    if not 0 <= gco2_per_kwh <= MAX_GCO2_PER_KWH:
        return f"{gco2_per_kwh:g} gCO2e/kWh is outside 0-{MAX_GCO2_PER_KWH:g}"
    return None


def check_value(
    value: IntensityValue, now: datetime, ahead: timedelta = MAX_AHEAD
) -> IntensityValue:
    """``value`` when its intensity is in range and its time at most ``ahead`` past ``now``.

    Anything else is a ``ProviderError`` of ``value.provider``, so the chain falls back.
    """
    problem = out_of_range(value.gco2_per_kwh)
    if problem is not None:
        raise ProviderError(value.provider, f"implausible value: {problem}")
    if value.time > now + ahead:
        raise ProviderError(
            value.provider,
            f"value timed {value.time.isoformat()}, in the future (now "
            f"{now.isoformat(timespec='seconds')}, at most {ahead} ahead allowed)",
        )
    return value
