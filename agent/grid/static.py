"""A fixed intensity from the config (``[grid] intensity_gco2_per_kwh``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from agent.config_check import ConfigError
from agent.grid.base import Provider
from agent.grid.registry import PROVIDERS
from agent.records import IntensityValue, Signal, utc_now

if TYPE_CHECKING:
    from agent.config import GridConfig


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


# -- registration: [grid] intensity_gco2_per_kwh is this provider's setting --------------------


def _validate_static(grid: GridConfig) -> None:
    if "static" in grid.providers and grid.intensity_gco2_per_kwh is None:
        raise ConfigError("grid.intensity_gco2_per_kwh: required by the static provider")
    if grid.intensity_gco2_per_kwh is not None and grid.intensity_gco2_per_kwh < 0:
        raise ConfigError("grid.intensity_gco2_per_kwh: must be 0 or more")


def _build_static(grid: GridConfig, zone: str) -> Provider:
    if grid.intensity_gco2_per_kwh is None:
        raise ConfigError("grid.intensity_gco2_per_kwh: required by the static provider")
    return StaticProvider(grid.intensity_gco2_per_kwh)


PROVIDERS.register("static", _build_static, validate=_validate_static, order=10)
