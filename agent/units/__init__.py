"""Functional units R: counted per app from the local API, Prometheus scrapes or code."""

from __future__ import annotations

from agent.config import Config
from agent.units.counter import UnitCounter, UnitError
from agent.units.http_api import LocalApi
from agent.units.scrape import PrometheusScraper, parse_exposition

__all__ = [
    "LocalApi",
    "PrometheusScraper",
    "UnitCounter",
    "UnitError",
    "app_units",
    "parse_exposition",
]


def app_units(config: Config) -> dict[str, str]:
    """App name → functional unit, for the ``[[apps]]`` rules that set ``unit``."""
    return {rule.name: rule.unit for rule in config.apps if rule.unit is not None}
