"""Grid zone names: ISO 3166 countries, Electricity Maps sub-zones, cloud regions.

A zone is an ISO 3166-1 alpha-2 (``FR``) or alpha-3 (``FRA``) code, an Electricity Maps
zone whose first part is the country's alpha-2 code (``US-CAL-CISO``, ``DK-DK1``,
``SE-SE3``), or ``WORLD``. ``UK`` and ``EL`` are accepted for ``GB`` and ``GR``.
"""

from __future__ import annotations

from agent.config import ConfigError
from agent.grid.data import alpha2_to_alpha3, cloud_regions, country_names

#: The zone used when none is configured: the world average of the builtin data.
WORLD = "WORLD"
CLOUDS = ("aws", "gcp", "azure")
_ALIASES = {"UK": "GB", "EL": "GR"}


def country_of(zone: str) -> str:
    """The ISO 3166 alpha-3 code of ``zone``'s country, or ``WORLD``.

    Raises ``ValueError`` with a message saying which zone names are accepted.
    """
    name = zone.strip().upper()
    if name == WORLD:
        return WORLD
    head = name.split("-", 1)[0]
    head = _ALIASES.get(head, head)
    if len(head) == 2 and head in alpha2_to_alpha3():
        return alpha2_to_alpha3()[head]
    if len(head) == 3 and head in country_names() and "-" not in name:
        return head
    raise ValueError(
        f"unknown grid zone {zone!r}: use an ISO 3166 country code (FR or FRA), an "
        "Electricity Maps zone (US-CAL-CISO, DK-DK1) or WORLD"
    )


def resolve_region(region: str, key: str = "grid.region") -> str:
    """The grid zone of a cloud region ``aws:eu-west-3`` → ``FR``.

    Raises ``ConfigError`` naming ``key``, with the known regions of that cloud.
    """
    cloud, sep, name = region.strip().lower().partition(":")
    if not sep or cloud not in CLOUDS or not name:
        raise ConfigError(
            f"{key}: expected CLOUD:REGION with CLOUD one of {', '.join(CLOUDS)} "
            f"(e.g. aws:eu-west-3), got {region!r}"
        )
    found = cloud_regions().get((cloud, name))
    if found is None:
        known = sorted(r for c, r in cloud_regions() if c == cloud)
        raise ConfigError(
            f"{key}: unknown {cloud} region {name!r}; known: {', '.join(known)} "
            "(agent/data/cloud-regions.csv); for another region set grid.zone instead"
        )
    return found.zone
