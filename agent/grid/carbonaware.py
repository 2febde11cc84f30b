"""A self-hosted Green Software Foundation Carbon Aware SDK, through its WebAPI (v1.x).

- ``GET {base_url}/emissions/bylocation?location=L`` → a JSON list of
  ``{"location", "time", "rating", "duration"}``; the value is the ``rating`` (g/kWh) of
  the latest ``time``.
- ``GET {base_url}/emissions/forecasts/current?location=L`` → a list of forecasts
  ``[{"location", "generatedAt", "forecastData": [{"location", "timestamp", "duration",
  "value"}, ...], "optimalDataPoints": [...], ...}]``; the points of the first one.

The location is ``[grid.carbonaware] location``, else the one ``_build_carbonaware`` derives (an
Azure region name, else the zone); it must be a location the SDK's configuration knows.
What the numbers mean depends on the SDK's configured data source: Electricity Maps gives
an average intensity, WattTime a marginal one converted to g/kWh. The signal is reported
as ``average``, the common case; configure the SDK accordingly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config_check import ConfigError, positive
from agent.grid.base import Provider, ProviderError
from agent.grid.http import http_json, url_with
from agent.grid.parse import field, intensity, items, timestamp
from agent.grid.registry import PROVIDERS
from agent.grid.zones import WORLD
from agent.records import IntensityValue, Signal

if TYPE_CHECKING:
    from agent.config import GridConfig


class CarbonAwareProvider(Provider):
    """Emissions of one location from a Carbon Aware SDK WebAPI."""

    name = "carbonaware"
    signal: Signal = "average"
    remote = True

    def __init__(
        self, config: CarbonAwareConfig, timeout_s: float, location: str | None = None
    ) -> None:
        self._base_url = config.base_url
        self._location = config.location or location
        self._timeout_s = timeout_s
        self.ttl_s = config.ttl_s

    def fetch(self, zone: str) -> IntensityValue:
        location = self._location or zone
        rows = self._get("emissions/bylocation", location)
        if not isinstance(rows, list):
            raise ProviderError(self.name, "response is not a list of emissions data")
        if not rows:
            raise ProviderError(self.name, f"no emissions data for location {location!r}")
        timed = [(timestamp(self.name, row, "time"), row) for row in rows]
        time, latest = max(timed, key=lambda pair: pair[0])
        return IntensityValue(
            zone, intensity(self.name, latest, "rating"), self.name, self.signal, time
        )

    def forecast(self, zone: str) -> list[IntensityValue]:
        data = self._get("emissions/forecasts/current", self._location or zone)
        points = items(self.name, field(self.name, data, 0), "forecastData")
        values = [
            IntensityValue(
                zone,
                intensity(self.name, point, "value"),
                self.name,
                self.signal,
                timestamp(self.name, point, "timestamp"),
            )
            for point in points
        ]
        return sorted(values, key=lambda v: v.time)

    def _get(self, path: str, location: str) -> Any:
        return http_json(
            "GET",
            url_with(self._base_url, path, {"location": location}),
            timeout_s=self._timeout_s,
            provider=self.name,
        )


# -- registration: the [grid.carbonaware] section, its check and the factory -------------------


@dataclass(frozen=True)
class CarbonAwareConfig:
    base_url: str = "http://127.0.0.1:8080"
    location: str | None = None  # else the grid zone or region
    ttl_s: float = 900


def _validate_carbonaware(grid: GridConfig) -> None:
    positive("grid.carbonaware.ttl_s", grid.carbonaware.ttl_s)


def _build_carbonaware(grid: GridConfig, zone: str) -> Provider:
    location = grid.carbonaware.location or _azure_region(grid.region)
    if not location and zone == WORLD:
        raise ConfigError(
            "grid.carbonaware.location: required by the carbonaware provider when neither "
            "grid.zone nor grid.region is set"
        )
    return CarbonAwareProvider(grid.carbonaware, grid.timeout_s, location)


def _azure_region(region: str | None) -> str | None:
    """``azure:westeurope`` → ``westeurope``, a location the Carbon Aware SDK knows."""
    if region and region.strip().lower().startswith("azure:"):
        return region.strip().lower().partition(":")[2]
    return None


PROVIDERS.register(
    "carbonaware",
    _build_carbonaware,
    section=CarbonAwareConfig,
    validate=_validate_carbonaware,
    order=60,
)
