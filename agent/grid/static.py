"""A fixed intensity from the config (``[grid] intensity_gco2_per_kwh``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

from agent.grid.base import Provider
from agent.records import IntensityValue, Signal, utc_now


class StaticProvider(Provider):
    """Always ``gco2_per_kwh``, signal ``average``, timed now."""

    name = "static"
    signal: Signal = "average"
    ttl_s = math.inf
    remote = False

    def __init__(self, gco2_per_kwh: float, now: Callable[[], datetime] = utc_now) -> None:
        self.gco2_per_kwh = gco2_per_kwh
        self._now = now

    def fetch(self, zone: str) -> IntensityValue:
        return IntensityValue(zone, self.gco2_per_kwh, self.name, self.signal, self._now())
