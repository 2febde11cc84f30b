"""The datasets shipped in ``agent/data``: country intensities, ISO 3166 codes, cloud regions.

Loaded once, on first use. See ``agent/data/README.md`` for sources and licences.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True, slots=True)
class CountryIntensity:
    """One row of ``grid-intensity-countries.csv``."""

    alpha3: str
    name: str
    year: int
    gco2_per_kwh: float


@dataclass(frozen=True, slots=True)
class CloudRegion:
    """One row of ``cloud-regions.csv``."""

    provider: str  # aws, gcp, azure
    region: str
    zone: str
    location: str


def _rows(name: str) -> list[dict[str, str]]:
    with resources.files("agent").joinpath(f"data/{name}").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@functools.cache
def country_intensities() -> dict[str, CountryIntensity]:
    """Yearly average intensity by ISO 3166 alpha-3 code."""
    return {
        row["iso3"]: CountryIntensity(
            row["iso3"], row["country"], int(row["year"]), float(row["gco2_per_kwh"])
        )
        for row in _rows("grid-intensity-countries.csv")
    }


@functools.cache
def alpha2_to_alpha3() -> dict[str, str]:
    """ISO 3166-1 alpha-2 → alpha-3."""
    return {row["alpha2"]: row["alpha3"] for row in _rows("iso3166.csv")}


@functools.cache
def country_names() -> dict[str, str]:
    """ISO 3166-1 alpha-3 → English short name."""
    return {row["alpha3"]: row["name"] for row in _rows("iso3166.csv")}


@functools.cache
def cloud_regions() -> dict[tuple[str, str], CloudRegion]:
    """``(provider, region)`` → its grid zone."""
    regions = [
        CloudRegion(row["provider"], row["region"], row["zone"], row["location"])
        for row in _rows("cloud-regions.csv")
    ]
    return {(r.provider, r.region): r for r in regions}
