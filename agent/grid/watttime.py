"""WattTime API v3: the marginal operating emissions rate (MOER) of a balancing authority.

- ``GET {base_url}/login`` with HTTP Basic auth (``[grid.watttime] username``/``password``)
  → ``{"token": "..."}``; the token is valid 30 minutes. It is cached and renewed 5 minutes
  before that, and once more if the API answers 401 (expired or revoked).
- ``GET {base_url}/v3/forecast?region=R&signal_type=co2_moer`` with ``Authorization:
  Bearer TOKEN`` → ``{"data": [{"point_time", "value"}, ...], "meta": {"region",
  "signal_type", "units": "lbs_co2_per_mwh", "data_point_period_seconds", "generated_at",
  ...}}``. The first point (the current 5 minutes) is the current value, the rest the
  forecast. ``/v3/signal-index`` only gives a 0-100 percentile, not an intensity, so it is
  not used.

Values are converted from lbs CO2/MWh to g CO2/kWh (× 453.59237 / 1000) and are a
``marginal`` signal. The region (``CAISO_NORTH``…) is WattTime's, independent of the zone,
which the values keep for the tag. Free plans only cover some regions (HTTP 403 otherwise).
Credentials and the token are never logged nor put in error messages.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config_check import ConfigError, positive
from agent.grid.base import HttpStatusError, Provider, ProviderError
from agent.grid.http import http_json, url_with
from agent.grid.parse import field, intensity, items, timestamp
from agent.grid.registry import PROVIDERS, require
from agent.records import IntensityValue, Signal

if TYPE_CHECKING:
    from agent.config import GridConfig

#: 1 lb = 453.59237 g and 1 MWh = 1000 kWh.
G_PER_KWH_PER_LBS_PER_MWH = 453.59237 / 1000
UNITS = "lbs_co2_per_mwh"
TOKEN_LIFETIME_S = 30 * 60
TOKEN_MARGIN_S = 5 * 60
LOGIN_HINT = "check [grid.watttime] username and password"
PLAN_HINT = "check [grid.watttime] region and that your WattTime plan covers it"


def lbs_per_mwh_to_g_per_kwh(value: float) -> float:
    """lbs CO2/MWh → g CO2/kWh."""
    return value * G_PER_KWH_PER_LBS_PER_MWH


class WattTimeProvider(Provider):
    """The marginal intensity of one WattTime region (see the module docstring)."""

    name = "watttime"
    signal: Signal = "marginal"
    remote = True

    def __init__(
        self,
        config: WattTimeConfig,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_url = config.base_url
        self._region = config.region or ""
        self._basic = base64.b64encode(
            f"{config.username or ''}:{config.password or ''}".encode()
        ).decode("ascii")
        self._password = config.password
        self._timeout_s = timeout_s
        self._clock = clock
        self._token: str | None = None
        self._token_at = 0.0
        self.ttl_s = config.ttl_s

    def fetch(self, zone: str) -> IntensityValue:
        return self._points(zone)[0]

    def forecast(self, zone: str) -> list[IntensityValue]:
        return self._points(zone)[1:]

    def _points(self, zone: str) -> list[IntensityValue]:
        query = {"region": self._region, "signal_type": "co2_moer"}
        data = self._authorized_get("v3/forecast", query)
        units = field(self.name, data, "meta", "units")
        if units != UNITS:
            raise ProviderError(self.name, f"unexpected units {units!r} (expected {UNITS})")
        points = items(self.name, data, "data")
        if not points:
            raise ProviderError(self.name, f"no forecast data for region {self._region!r}")
        return [
            IntensityValue(
                zone=zone,
                gco2_per_kwh=intensity(self.name, point, "value", scale=G_PER_KWH_PER_LBS_PER_MWH),
                provider=self.name,
                signal=self.signal,
                time=timestamp(self.name, point, "point_time"),
            )
            for point in points
        ]

    def _authorized_get(self, path: str, query: dict[str, str]) -> Any:
        """GET with the cached token; on 401 (token expired or revoked) log in once more."""
        self._ensure_token()
        try:
            return self._get(path, query)
        except HttpStatusError as exc:
            if exc.status != 401:
                raise
        self._token = None
        self._ensure_token()
        try:
            return self._get(path, query)
        except HttpStatusError as exc:
            if exc.status == 401:
                raise HttpStatusError(
                    self.name, "HTTP 401 Unauthorized even with a new token", 401
                ) from None
            raise

    def _ensure_token(self) -> None:
        """Log in when there is no token or it is about to expire."""
        if (
            self._token is not None
            and self._clock() - self._token_at < TOKEN_LIFETIME_S - TOKEN_MARGIN_S
        ):
            return
        self._token = None
        data = http_json(
            "GET",
            url_with(self._base_url, "login"),
            {"Authorization": f"Basic {self._basic}"},
            timeout_s=self._timeout_s,
            provider=self.name,
            auth_hint=LOGIN_HINT,
            secrets=(self._password, self._basic),
        )
        token = field(self.name, data, "token")
        if not isinstance(token, str) or not token:
            raise ProviderError(self.name, "login answer has no token")
        self._token, self._token_at = token, self._clock()

    def _get(self, path: str, query: dict[str, str]) -> Any:
        token = self._token or ""
        return http_json(
            "GET",
            url_with(self._base_url, path, query),
            {"Authorization": f"Bearer {token}"},
            timeout_s=self._timeout_s,
            provider=self.name,
            auth_hint=PLAN_HINT,
            secrets=(token, self._password, self._basic),
        )


# -- registration: the [grid.watttime] section, its checks and the factory ---------------------


@dataclass(frozen=True)
class WattTimeConfig:
    base_url: str = "https://api.watttime.org"
    username: str | None = None
    password: str | None = None
    region: str | None = None  # a WattTime balancing authority, e.g. CAISO_NORTH
    ttl_s: float = 300


_REQUIRED = ("username", "password", "region")


def _validate_watttime(grid: GridConfig) -> None:
    if "watttime" in grid.providers:
        for key in _REQUIRED:
            if not getattr(grid.watttime, key):
                raise ConfigError(f"grid.watttime.{key}: required by the watttime provider")
    positive("grid.watttime.ttl_s", grid.watttime.ttl_s)


def _build_watttime(grid: GridConfig, zone: str) -> Provider:
    for key in _REQUIRED:
        require(f"grid.watttime.{key}", getattr(grid.watttime, key), "watttime")
    return WattTimeProvider(grid.watttime, grid.timeout_s)


PROVIDERS.register(
    "watttime", _build_watttime, section=WattTimeConfig, validate=_validate_watttime, order=50
)
