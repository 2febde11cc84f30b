"""Grid carbon intensity: providers behind one interface, chained with fallbacks.

``build_chain(config.grid)`` gives the ``IntensityChain`` the agent reads each cycle.
Providers: ``static`` (a configured number), ``builtin`` (yearly country averages shipped
with the agent: the last resort of every chain), ``electricitymaps``, ``ukgrid``,
``watttime``, ``carbonaware`` (a self-hosted Carbon Aware SDK) and ``csv`` (a local file).

The zone is ``grid.zone``, else the zone of the cloud region ``grid.region``
(``agent/data/cloud-regions.csv``), else ``GB`` when the ``ukgrid`` provider is listed,
else ``WORLD`` (the world average of the builtin data).
"""

from __future__ import annotations

import logging

from agent.config import ConfigError, GridConfig
from agent.grid.base import Provider, ProviderError
from agent.grid.builtin import BuiltinProvider
from agent.grid.carbonaware import CarbonAwareProvider
from agent.grid.chain import IntensityChain
from agent.grid.csvfile import CsvProvider
from agent.grid.electricitymaps import ElectricityMapsProvider
from agent.grid.static import StaticProvider
from agent.grid.ukgrid import UkGridProvider
from agent.grid.watttime import WattTimeProvider
from agent.grid.zones import WORLD, country_of, resolve_region

__all__ = [
    "WORLD",
    "IntensityChain",
    "Provider",
    "ProviderError",
    "build_chain",
    "build_provider",
    "chain_zone",
    "country_of",
    "resolve_region",
]

log = logging.getLogger("sci_agent.grid")


def chain_zone(config: GridConfig) -> str:
    """The zone the chain reports on (see the module docstring)."""
    if config.zone and config.zone.strip():
        return config.zone.strip()
    if config.region:
        return resolve_region(config.region)
    return "GB" if "ukgrid" in config.providers else WORLD


def build_chain(config: GridConfig) -> IntensityChain:
    """The chain of ``config.providers`` for the configured zone.

    Raises ``ConfigError`` naming the key for an unknown zone or region, or a provider
    missing what it needs (a token, credentials, a location).
    """
    zone = chain_zone(config)
    names: list[str] = []
    for name in config.providers:
        if name in names:
            log.warning("grid.providers: %s is listed twice; using its first place", name)
        else:
            names.append(name)
    if "builtin" in names[:-1]:
        unused = ", ".join(names[names.index("builtin") + 1 :])
        log.warning("grid.providers: %s after builtin are never used (it never fails)", unused)
    providers = [build_provider(name, config, zone) for name in names]
    try:
        return IntensityChain(providers, zone)
    except ProviderError as exc:
        key = "grid.zone" if config.zone else "grid.region"
        raise ConfigError(f"{key}: {exc.message}") from None


def build_provider(name: str, config: GridConfig, zone: str) -> Provider:
    """One provider from its ``[grid.NAME]`` section; ``ConfigError`` if it lacks a setting."""
    timeout_s = config.timeout_s
    if name == "static":
        if config.intensity_gco2_per_kwh is None:
            raise ConfigError("grid.intensity_gco2_per_kwh: required by the static provider")
        return StaticProvider(config.intensity_gco2_per_kwh)
    if name == "builtin":
        return BuiltinProvider()
    if name == "electricitymaps":
        _require("grid.electricitymaps.token", config.electricitymaps.token, name)
        if zone == WORLD:
            raise ConfigError(
                "grid.zone: required by the electricitymaps provider (or grid.region)"
            )
        return ElectricityMapsProvider(config.electricitymaps, timeout_s)
    if name == "ukgrid":
        if _country(zone) not in ("GBR", None):
            raise ConfigError(
                f"grid.zone: the ukgrid provider covers Great Britain only, not {zone!r}"
            )
        return UkGridProvider(config.ukgrid, timeout_s)
    if name == "watttime":
        for key in ("username", "password", "region"):
            _require(f"grid.watttime.{key}", getattr(config.watttime, key), name)
        return WattTimeProvider(config.watttime, timeout_s)
    if name == "carbonaware":
        location = config.carbonaware.location or _azure_region(config.region)
        if not location and zone == WORLD:
            raise ConfigError(
                "grid.carbonaware.location: required by the carbonaware provider when neither "
                "grid.zone nor grid.region is set"
            )
        return CarbonAwareProvider(config.carbonaware, timeout_s, location)
    if name == "csv":
        _require("grid.csv.path", config.csv.path, name)
        assert config.csv.path is not None
        return CsvProvider(config.csv.path)
    raise ConfigError(f"grid.providers: unknown provider {name!r}")


def _country(zone: str) -> str | None:
    try:
        return country_of(zone)
    except ValueError:
        return None  # reported by the chain, which checks the zone against the builtin data


def _require(key: str, value: object, provider: str) -> None:
    if value is None or value == "":
        raise ConfigError(f"{key}: required by the {provider} provider")


def _azure_region(region: str | None) -> str | None:
    """``azure:westeurope`` → ``westeurope``, a location the Carbon Aware SDK knows."""
    if region and region.strip().lower().startswith("azure:"):
        return region.strip().lower().partition(":")[2]
    return None
