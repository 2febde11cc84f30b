"""Electricity Maps API v3: live, forecast and past carbon intensity of a zone.

Endpoints (``base_url`` defaults to ``https://api.electricitymap.org/v3``), each with the
header ``auth-token: TOKEN``:

- ``GET /carbon-intensity/latest?zone=Z`` →
  ``{"zone", "carbonIntensity", "datetime", "updatedAt", "isEstimated", ...}``
- ``GET /carbon-intensity/forecast?zone=Z`` →
  ``{"zone", "forecast": [{"carbonIntensity", "datetime"}, ...], "updatedAt"}``
- ``GET /carbon-intensity/history?zone=Z`` → ``{"zone", "history": [<as latest>, ...]}``
  (the past 24 hours, hourly)

``carbonIntensity`` is lifecycle gCO2eq/kWh of the electricity consumed in the zone (the
API's default emission factors), an ``average`` signal. Zones are Electricity Maps zone
keys (``FR``, ``DE``, ``US-CAL-CISO``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config_check import ConfigError, positive
from agent.grid.base import Provider
from agent.grid.http import http_json, url_with
from agent.grid.parse import intensity, items, timestamp
from agent.grid.registry import PROVIDERS, require
from agent.grid.zones import WORLD
from agent.records import IntensityValue, Signal

if TYPE_CHECKING:
    from agent.config import GridConfig

AUTH_HINT = "check [grid.electricitymaps] token"


class ElectricityMapsProvider(Provider):
    """Live intensity of one Electricity Maps zone (see the module docstring)."""

    name = "electricitymaps"
    signal: Signal = "average"
    remote = True

    def __init__(self, config: ElectricityMapsConfig, timeout_s: float) -> None:
        self._base_url = config.base_url
        self._token = config.token or ""
        self._timeout_s = timeout_s
        self.ttl_s = config.ttl_s

    def fetch(self, zone: str) -> IntensityValue:
        return self._value(zone, self._get("carbon-intensity/latest", zone))

    def forecast(self, zone: str) -> list[IntensityValue]:
        data = self._get("carbon-intensity/forecast", zone)
        return [self._value(zone, point) for point in items(self.name, data, "forecast")]

    def history(self, zone: str) -> list[IntensityValue]:
        """The past values the API keeps (24 h), oldest first."""
        data = self._get("carbon-intensity/history", zone)
        return [self._value(zone, point) for point in items(self.name, data, "history")]

    def _get(self, path: str, zone: str) -> Any:
        return http_json(
            "GET",
            url_with(self._base_url, path, {"zone": zone}),
            {"auth-token": self._token},
            timeout_s=self._timeout_s,
            provider=self.name,
            auth_hint=AUTH_HINT,
            secrets=(self._token,),
        )

    def _value(self, zone: str, point: Any) -> IntensityValue:
        return IntensityValue(
            zone=zone,
            gco2_per_kwh=intensity(self.name, point, "carbonIntensity"),
            provider=self.name,
            signal=self.signal,
            time=timestamp(self.name, point, "datetime"),
        )


# -- registration: the [grid.electricitymaps] section, its checks and the factory --------------


@dataclass(frozen=True)
class ElectricityMapsConfig:
    base_url: str = "https://api.electricitymap.org/v3"
    token: str | None = None
    ttl_s: float = 900


def _validate_electricitymaps(grid: GridConfig) -> None:
    if "electricitymaps" in grid.providers and not grid.electricitymaps.token:
        raise ConfigError("grid.electricitymaps.token: required by the electricitymaps provider")
    positive("grid.electricitymaps.ttl_s", grid.electricitymaps.ttl_s)


def _build_electricitymaps(grid: GridConfig, zone: str) -> Provider:
    cfg: ElectricityMapsConfig = grid.electricitymaps
    require("grid.electricitymaps.token", cfg.token, "electricitymaps")
    if zone == WORLD:
        raise ConfigError("grid.zone: required by the electricitymaps provider (or grid.region)")
    return ElectricityMapsProvider(cfg, grid.timeout_s)


PROVIDERS.register(
    "electricitymaps",
    _build_electricitymaps,
    section=ElectricityMapsConfig,
    validate=_validate_electricitymaps,
    order=30,
)
