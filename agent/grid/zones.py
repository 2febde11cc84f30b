"""Grid zone names: ISO 3166 countries, Electricity Maps sub-zones, cloud regions.

A zone is an ISO 3166-1 alpha-2 (``FR``) or alpha-3 (``FRA``) code, an Electricity Maps
zone whose first part is the country's alpha-2 code (``US-CAL-CISO``, ``DK-DK1``,
``SE-SE3``), or ``WORLD``. ``UK`` and ``EL`` are accepted for ``GB`` and ``GR``.

A sub-zone's parent is its country (``FR`` for ``FR-COR``): data that holds only
countries answers a sub-zone with the parent's value, flagged as such. A name that
maps to no country is an error listing the closest known names (difflib).
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from agent.config_check import ConfigError
from agent.grid.data import alpha2_to_alpha3, cloud_regions, country_names

#: The zone used when none is configured: the world average of the builtin data.
WORLD = "WORLD"
CLOUDS = ("aws", "gcp", "azure")
_ALIASES = {"UK": "GB", "EL": "GR"}


_SUB_ZONE = re.compile(r"[A-Z0-9_]+")


@dataclass(frozen=True, slots=True)
class ZoneMatch:
    """What a zone name refers to.

    ``country`` is the ISO 3166 alpha-3 code (or ``WORLD``); ``parent`` is the country's
    zone (alpha-2, ``FR``) when the name is a sub-zone of it (``FR-COR``), else None.
    """

    zone: str
    country: str
    parent: str | None


def match_zone(zone: str) -> ZoneMatch:
    """Resolve ``zone`` (see the module docstring).

    Raises ``ValueError`` saying which names are accepted, with the closest known ones.
    """
    name = zone.strip().upper()
    if name == WORLD:
        return ZoneMatch(zone.strip(), WORLD, None)
    head, dash, rest = name.partition("-")
    head = _ALIASES.get(head, head)
    subs = rest.split("-") if dash else []
    if len(head) == 2 and head in alpha2_to_alpha3() and all(_SUB_ZONE.fullmatch(s) for s in subs):
        return ZoneMatch(zone.strip(), alpha2_to_alpha3()[head], head if subs else None)
    if len(head) == 3 and head in country_names() and not dash:
        return ZoneMatch(zone.strip(), head, None)
    hint = " or ".join(close_zones(zone))
    raise ValueError(
        f"unknown grid zone {zone!r}: use an ISO 3166 country code (FR or FRA), an "
        "Electricity Maps zone (US-CAL-CISO, DK-DK1) or WORLD"
        + (f"; did you mean {hint}?" if hint else "")
    )


def country_of(zone: str) -> str:
    """The ISO 3166 alpha-3 code of ``zone``'s country, or ``WORLD``; ``ValueError`` if none."""
    return match_zone(zone).country


def close_zones(zone: str, n: int = 3) -> list[str]:
    """Up to ``n`` known zones whose code or country name is close to ``zone``."""
    name = zone.strip().upper()
    scores: dict[str, float] = {}
    for query in {name, name.partition("-")[0], name.replace("-", " ")}:
        for key, label in _known_names().items():
            ratio = difflib.SequenceMatcher(None, query, key).ratio()
            scores[label] = max(scores.get(label, 0.0), ratio)
    best = max(scores.values(), default=0.0)
    cutoff = max(0.6, best - 0.15)  # only the names about as close as the closest
    ranked = sorted((label for label, r in scores.items() if r >= cutoff), key=scores.__getitem__)
    return ranked[::-1][:n]


@functools.cache
def _known_names() -> dict[str, str]:
    """Upper-case code or country name → how to suggest it (``FR (France)``)."""
    names: dict[str, str] = {WORLD: WORLD}
    for alpha2, alpha3 in alpha2_to_alpha3().items():
        label = f"{alpha2} ({country_names()[alpha3]})"
        names.setdefault(alpha2, label)
        names.setdefault(alpha3, label)
        names.setdefault(country_names()[alpha3].upper(), label)
    return names


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
