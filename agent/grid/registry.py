"""The grid provider registry: each provider module of ``agent/grid`` registers here.

A provider's factory gets the ``[grid]`` section and the zone the chain reports on,
and returns the provider, or raises ``ConfigError`` naming the key it lacks. Its
``validate`` gets the ``[grid]`` section at load time, listed or not: what a provider
requires is checked only when ``grid.providers`` names it. ``order`` is the order of
the names in messages (``static, builtin, electricitymaps…``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.config_check import ConfigError
from agent.plugins import Registry

if TYPE_CHECKING:
    from agent.config import GridConfig
    from agent.grid.base import Provider

ProviderFactory = Callable[["GridConfig", str], "Provider"]

PROVIDERS: Registry[ProviderFactory] = Registry("grid.providers", "agent.grid")


def require(key: str, value: object, provider: str) -> None:
    """``ConfigError`` naming ``key`` when a setting ``provider`` needs is unset or empty."""
    if value is None or value == "":
        raise ConfigError(f"{key}: required by the {provider} provider")
