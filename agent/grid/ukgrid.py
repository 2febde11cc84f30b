"""National Grid ESO Carbon Intensity API (Great Britain; no key), API version 2.0.0.

Endpoints (``base_url`` defaults to ``https://api.carbonintensity.org.uk``):

- national: ``GET /intensity`` → ``{"data": [{"from", "to", "intensity": {"forecast",
  "actual", "index"}}]}``; the value is ``actual`` when not null, else ``forecast``;
- a DNO region (``[grid.ukgrid] region_id``, 1-17): ``GET /regional/regionid/{id}`` and by
  outward postcode (``postcode``, e.g. ``RG10``): ``GET /regional/postcode/{code}`` →
  ``{"data": [{"regionid", "shortname", "data": [{"from", "to", "intensity":
  {"forecast", "index"}}]}]}`` (regional values are forecasts only);
- forecast, the next 48 h in half hours: ``GET /intensity/{from}/fw48h`` (national, same
  shape as ``/intensity``), ``/regional/intensity/{from}/fw48h/regionid/{id}`` or
  ``.../postcode/{code}`` (``{"data": {"regionid", "shortname", "data": [...]}}``).

Values are gCO2/kWh, signal ``average``, timed at the start (``from``) of their half hour.
The zone must be in Great Britain (``GB``, ``GBR``, ``UK``); the value keeps the zone asked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from agent.config_check import ConfigError, positive
from agent.grid.base import Provider, ProviderError
from agent.grid.http import http_json, url_with
from agent.grid.parse import field, intensity, items, timestamp
from agent.grid.registry import PROVIDERS
from agent.grid.zones import country_of
from agent.records import IntensityValue, Signal, utc_now

if TYPE_CHECKING:
    from agent.config import GridConfig


class UkGridProvider(Provider):
    """Half-hourly intensity of Great Britain or one of its regions."""

    name = "ukgrid"
    signal: Signal = "average"
    remote = True

    def __init__(
        self, config: UkGridConfig, timeout_s: float, now: Callable[[], datetime] = utc_now
    ) -> None:
        self._base_url = config.base_url
        self._timeout_s = timeout_s
        self._now = now
        self.ttl_s = config.ttl_s
        self._region = ""  # the path suffix selecting a region, "" for national
        if config.region_id is not None:
            self._region = f"regionid/{config.region_id}"
        elif config.postcode:
            outward = config.postcode.strip().split()[0].upper()
            self._region = f"postcode/{quote(outward, safe='')}"

    def fetch(self, zone: str) -> IntensityValue:
        self._check_zone(zone)
        if not self._region:
            return self._value(zone, field(self.name, self._get("intensity"), "data", 0))
        data = self._get(f"regional/{self._region}")
        region = field(self.name, data, "data", 0)
        return self._value(zone, field(self.name, region, "data", 0))

    def forecast(self, zone: str) -> list[IntensityValue]:
        self._check_zone(zone)
        start = self._now().strftime("%Y-%m-%dT%H:%MZ")
        if not self._region:
            points = items(self.name, self._get(f"intensity/{start}/fw48h"), "data")
        else:
            answer = self._get(f"regional/intensity/{start}/fw48h/{self._region}")
            data = field(self.name, answer, "data")
            region = data[0] if isinstance(data, list) and data else data
            points = items(self.name, region, "data")
        return [self._value(zone, point) for point in points]

    def _check_zone(self, zone: str) -> None:
        try:
            country = country_of(zone)
        except ValueError as exc:
            raise ProviderError(self.name, str(exc)) from None
        if country != "GBR":
            raise ProviderError(
                self.name, f'covers Great Britain only, not zone {zone!r} (set grid.zone = "GB")'
            )

    def _get(self, path: str) -> Any:
        return http_json(
            "GET", url_with(self._base_url, path), timeout_s=self._timeout_s, provider=self.name
        )

    def _value(self, zone: str, period: Any) -> IntensityValue:
        values = field(self.name, period, "intensity")
        actual = values.get("actual") if isinstance(values, dict) else None
        if actual is not None:
            gco2 = intensity(self.name, period, "intensity", "actual")
        else:
            gco2 = intensity(self.name, period, "intensity", "forecast")
        return IntensityValue(
            zone, gco2, self.name, self.signal, timestamp(self.name, period, "from")
        )


# -- registration: the [grid.ukgrid] section, its checks and the factory -----------------------


@dataclass(frozen=True)
class UkGridConfig:
    base_url: str = "https://api.carbonintensity.org.uk"
    region_id: int | None = None  # 1-17 for a DNO region; unset: national
    postcode: str | None = None  # outward code, e.g. "RG10"
    ttl_s: float = 900


def _validate_ukgrid(grid: GridConfig) -> None:
    region_id = grid.ukgrid.region_id
    if region_id is not None and not 1 <= region_id <= 17:
        raise ConfigError(f"grid.ukgrid.region_id: must be 1-17, got {region_id}")
    positive("grid.ukgrid.ttl_s", grid.ukgrid.ttl_s)


def _build_ukgrid(grid: GridConfig, zone: str) -> Provider:
    if _country(zone) not in ("GBR", None):
        raise ConfigError(f"grid.zone: the ukgrid provider covers Great Britain only, not {zone!r}")
    return UkGridProvider(grid.ukgrid, grid.timeout_s)


def _country(zone: str) -> str | None:
    try:
        return country_of(zone)
    except ValueError:
        return None  # reported by the chain, which checks the zone against the builtin data


PROVIDERS.register(
    "ukgrid", _build_ukgrid, section=UkGridConfig, validate=_validate_ukgrid, order=40
)
