"""Yearly country averages shipped with the agent: the last resort of every chain.

Values come from ``agent/data/grid-intensity-countries.csv`` (Our World in Data, "Carbon
intensity of electricity generation", based on Ember and the Energy Institute; CC BY 4.0).
The data holds countries only: a sub-zone (``US-CAL-CISO``, ``FR-COR``) gets its
country's value flagged ``fallback`` with ``value_zone`` naming the country (``US``),
and keeps the zone asked as ``zone``. Its time is 1 January of the data year (UTC); the
signal is ``average``.

The dataset has no world row, so ``WORLD`` (the zone when none is configured) uses
``WORLD_GCO2_PER_KWH``: the 2023 global average of Ember's Global Electricity Review 2024.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agent.grid.base import Provider, ProviderError
from agent.grid.data import country_intensities, country_names
from agent.grid.registry import PROVIDERS
from agent.grid.zones import WORLD, match_zone
from agent.records import IntensityValue, Signal

if TYPE_CHECKING:
    from agent.config import GridConfig

WORLD_GCO2_PER_KWH = 480.0
WORLD_YEAR = 2023
SOURCE = "Our World in Data"


class BuiltinProvider(Provider):
    """The yearly average of the zone's country (local data: never fails for a known zone)."""

    name = "builtin"
    signal: Signal = "average"
    ttl_s = math.inf
    remote = False

    def fetch(self, zone: str) -> IntensityValue:
        try:
            match = match_zone(zone)
        except ValueError as exc:
            raise ProviderError(self.name, str(exc)) from None
        country = match.country
        if country == WORLD:
            gco2, year = WORLD_GCO2_PER_KWH, WORLD_YEAR
        else:
            row = country_intensities().get(country)
            if row is None:
                raise ProviderError(
                    self.name,
                    f"no yearly intensity for {country_names()[country]} ({country}) in the "
                    "builtin data; set grid.zone to a neighbouring grid or use the static "
                    "provider",
                )
            gco2, year = row.gco2_per_kwh, row.year
        time = datetime(year, 1, 1, tzinfo=UTC)
        parent = match.parent  # a sub-zone gets its country's value, and says so
        return IntensityValue(
            zone, gco2, self.name, self.signal, time, fallback=parent is not None, value_zone=parent
        )


def stored_value_zone(zone: str, provider: str) -> str:
    """The zone whose value a recorded ``(zone, provider)`` row holds.

    The builtin data answers a sub-zone with its country's value (``FR`` for ``FR-COR``);
    every other provider answers for the zone asked. So the zone and provider already
    stored with each value say whose value it was, and reports derive it from them.
    """
    if provider != BuiltinProvider.name:
        return zone
    try:
        return match_zone(zone).parent or zone
    except ValueError:
        return zone  # a zone recorded by another version: say no more than it did


def _build_builtin(grid: GridConfig, zone: str) -> Provider:
    return BuiltinProvider()


PROVIDERS.register("builtin", _build_builtin, order=20)
