"""The SCI formula of ISO/IEC 21031:2024: SCI = (E × I + M) per R. Pure, no I/O.

Units throughout: energy E in kWh, grid intensity I in gCO2e/kWh, carbon (O, M) in
grams CO2e, times in seconds. Every argument is checked: a negative, NaN or infinite
value raises ``ValueError`` with a message that names the argument. A score over zero
functional units is undefined and comes back as ``None``, never a division by zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

JOULES_PER_KWH = 3.6e6
#: A year of 365.25 days (the Julian year), so leap years average out over a lifespan.
SECONDS_PER_YEAR = 365.25 * 86_400


class Interval(NamedTuple):
    """One measured interval of a window: its E, I, M and R."""

    energy_kwh: float
    intensity_gco2_per_kwh: float
    embodied_g: float
    units: float


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def _non_negative(name: str, value: float) -> float:
    if _finite(name, value) < 0:
        raise ValueError(f"{name} must be ≥ 0, got {value}")
    return value


def _positive(name: str, value: float) -> float:
    if _finite(name, value) <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def joules_to_kwh(joules: float) -> float:
    """Joules → kWh (1 kWh = 3.6 MJ)."""
    return _non_negative("joules", joules) / JOULES_PER_KWH


def kwh_to_joules(kwh: float) -> float:
    """kWh → joules (1 kWh = 3.6 MJ)."""
    return _non_negative("kwh", kwh) * JOULES_PER_KWH


def years_to_seconds(years: float) -> float:
    """Years of 365.25 days → seconds."""
    return _non_negative("years", years) * SECONDS_PER_YEAR


def operational_carbon(energy_kwh: float, intensity_gco2_per_kwh: float) -> float:
    """Operational emissions O = E × I, in grams."""
    _non_negative("energy_kwh", energy_kwh)
    _non_negative("intensity_gco2_per_kwh", intensity_gco2_per_kwh)
    return energy_kwh * intensity_gco2_per_kwh


def embodied_carbon(
    total_embodied_g: float,
    time_reserved_s: float,
    expected_lifespan_s: float,
    resources_reserved: float = 1.0,
    total_resources: float = 1.0,
) -> float:
    """Embodied share M = TE × (TiR / EL) × (RR / ToR), in grams."""
    _non_negative("total_embodied_g", total_embodied_g)
    _non_negative("time_reserved_s", time_reserved_s)
    _positive("expected_lifespan_s", expected_lifespan_s)
    _non_negative("resources_reserved", resources_reserved)
    _positive("total_resources", total_resources)
    if resources_reserved > total_resources:
        raise ValueError(
            f"resources_reserved must be ≤ total_resources ({total_resources}), "
            f"got {resources_reserved}"
        )
    time_share = time_reserved_s / expected_lifespan_s
    return total_embodied_g * time_share * (resources_reserved / total_resources)


def sci(
    energy_kwh: float,
    intensity_gco2_per_kwh: float,
    embodied_g: float,
    functional_units: float,
) -> float | None:
    """SCI = (E × I + M) / R in grams per unit; ``None`` when R is zero."""
    operational = operational_carbon(energy_kwh, intensity_gco2_per_kwh)
    _non_negative("embodied_g", embodied_g)
    if _non_negative("functional_units", functional_units) == 0:
        return None
    return (operational + embodied_g) / functional_units


def sci_over(intervals: Iterable[tuple[float, float, float, float]]) -> float | None:
    """The SCI of a window: Σ (E × I + M) / Σ R over its intervals.

    Items are ``Interval`` or plain ``(energy_kwh, intensity_gco2_per_kwh, embodied_g,
    units)`` tuples. This is the ratio of the sums, not the mean of per-interval
    scores; ``None`` when the window counted no units.
    """
    carbon = 0.0
    units = 0.0
    for i, item in enumerate(intervals):
        if len(item) != len(Interval._fields):
            raise ValueError(
                f"intervals[{i}] must be ({', '.join(Interval._fields)}), got {item!r}"
            )
        energy, intensity, embodied, count = item
        _non_negative(f"intervals[{i}].energy_kwh", energy)
        _non_negative(f"intervals[{i}].intensity_gco2_per_kwh", intensity)
        carbon += energy * intensity + _non_negative(f"intervals[{i}].embodied_g", embodied)
        units += _non_negative(f"intervals[{i}].units", count)
    return carbon / units if units > 0 else None


def _weighted_mean(name: str, weight: str, samples: Iterable[tuple[float, float]]) -> float | None:
    total = 0.0
    weights = 0.0
    for i, (intensity, w) in enumerate(samples):
        _non_negative(f"{name}[{i}].intensity_gco2_per_kwh", intensity)
        total += intensity * _non_negative(f"{name}[{i}].{weight}", w)
        weights += w
    return total / weights if weights > 0 else None


def time_weighted_intensity(samples: Iterable[tuple[float, float]]) -> float | None:
    """Mean I weighted by time over ``(intensity_gco2_per_kwh, duration_s)`` pairs.

    What an SCI report discloses as the period's I; ``None`` over zero time.
    """
    return _weighted_mean("samples", "duration_s", samples)


def energy_weighted_intensity(samples: Iterable[tuple[float, float]]) -> float | None:
    """Mean I weighted by energy over ``(intensity_gco2_per_kwh, energy_kwh)`` pairs.

    The effective I with Σ E × I = (Σ E) × I, unlike the time-weighted mean when
    load and intensity vary together; ``None`` over zero energy.
    """
    return _weighted_mean("samples", "energy_kwh", samples)
