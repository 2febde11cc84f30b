"""Grid carbon intensity: providers behind one interface, chained with fallbacks.

``build_chain(config.grid)`` gives the ``IntensityChain`` the agent reads each cycle.
Providers: ``static`` (a configured number), ``builtin`` (yearly country averages shipped
with the agent: the last resort of every chain), ``electricitymaps``, ``ukgrid``,
``watttime``, ``carbonaware`` (a self-hosted Carbon Aware SDK) and ``csv`` (a local file).
Each provider module registers itself, its ``[grid.NAME]`` section and its checks in
``PROVIDERS`` (``agent.grid.registry``).

The zone is ``grid.zone``, else the zone of the cloud region ``grid.region``
(``agent/data/cloud-regions.csv``), else ``GB`` when the ``ukgrid`` provider is listed,
else ``WORLD`` (the world average of the builtin data).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agent.config_check import ConfigError
from agent.grid.base import Provider, ProviderError
from agent.grid.chain import IntensityChain
from agent.grid.registry import PROVIDERS
from agent.grid.zones import WORLD, country_of, resolve_region

if TYPE_CHECKING:
    from agent.config import GridConfig

__all__ = [
    "PROVIDERS",
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

    ``config`` is a validated ``[grid]`` section (``agent.config.validate`` refuses a
    provider listed twice). Raises ``ConfigError`` naming the key for an unknown zone or
    region, or a provider missing what it needs (a token, credentials, a location).
    """
    zone = chain_zone(config)
    names = list(config.providers)
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
    try:
        plugin = PROVIDERS.get(name)
    except KeyError:
        raise ConfigError(f"grid.providers: unknown provider {name!r}") from None
    return plugin.factory(config, zone)
