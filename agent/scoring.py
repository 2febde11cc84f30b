"""The scoring stage: each app's SCI = (E × I + M) per R for one interval.

- **E**: the app's attributed energy plus its share of the host's overhead (idle and
  unattributed energy), times the PUE. ``idle_policy = "proportional"`` (default)
  shares the overhead among apps in proportion to their attributed energy;
  ``"separate"`` leaves it out of apps and reports ``_idle`` and ``_unattributed``
  rows of their own.
- **I**: the grid intensity of the interval, from the provider chain.
- **M**: the host's embodied emissions × interval / lifespan × the app's share of
  the host's CPU time (proportional: its share of the CPU time all apps used;
  separate: its share of the CPU capacity, the unused rest going to ``_idle``).
- **R**: the functional units the app counted in the interval.

Under either policy the rows add up to the host: Σ operational = E_host × PUE × I
and Σ embodied = TE × interval / lifespan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from agent.records import (
    IDLE_APP,
    UNATTRIBUTED_APP,
    IntensityValue,
    IntervalResult,
    SciRecord,
)
from sci.formula import embodied_carbon, joules_to_kwh, operational_carbon, sci, years_to_seconds


class Scorer:
    """Turns attributed intervals into SCI rows per application."""

    def __init__(
        self,
        app_units: Mapping[str, str],
        embodied_kgco2e: float,
        lifespan_years: float,
        idle_policy: str = "proportional",
        pue: float = 1.0,
        cpu_count: int = 1,
    ) -> None:
        self.app_units = dict(app_units)
        self.embodied_g = embodied_kgco2e * 1000.0
        self.lifespan_s = years_to_seconds(lifespan_years)
        self.idle_policy = idle_policy
        self.pue = pue
        self.cpu_count = max(1, cpu_count)

    def score(
        self, result: IntervalResult, intensity: IntensityValue, units: Mapping[str, float]
    ) -> IntervalResult:
        """Return ``result`` with its intensity and one SCI row per app (plus overhead rows)."""
        seconds = max(0.0, result.interval_s)
        host_m = embodied_carbon(self.embodied_g, seconds, self.lifespan_s)
        overhead = result.idle_joules + result.unattributed_joules
        active = sum(a.joules for a in result.apps)
        cpu_used = sum(a.cpu_s for a in result.apps)
        capacity = seconds * self.cpu_count
        proportional = self.idle_policy == "proportional" and active > 0
        rows: list[SciRecord] = []
        m_given = 0.0
        for app in result.apps:
            joules = app.joules + (overhead * app.joules / active if proportional else 0.0)
            if proportional:
                share = app.cpu_s / cpu_used if cpu_used > 0 else app.joules / active
            else:
                share = app.cpu_s / max(capacity, cpu_used) if capacity > 0 else 0.0
            m = host_m * share
            rows.append(self._row(app.app, joules, m, intensity, units))
            m_given += m
        if not proportional:
            idle_m = max(0.0, host_m - m_given)
            rows.append(self._row(IDLE_APP, result.idle_joules, idle_m, intensity, {}))
            rows.append(self._row(UNATTRIBUTED_APP, result.unattributed_joules, 0.0, intensity, {}))
        return replace(result, intensity=intensity, sci=tuple(rows))

    def _row(
        self,
        app: str,
        joules: float,
        embodied_g: float,
        intensity: IntensityValue,
        units: Mapping[str, float],
    ) -> SciRecord:
        energy_kwh = joules_to_kwh(max(0.0, joules)) * self.pue
        count = float(units.get(app, 0.0))
        return SciRecord(
            app=app,
            unit=self.app_units.get(app),
            units=count,
            energy_kwh=energy_kwh,
            intensity_gco2_per_kwh=intensity.gco2_per_kwh,
            operational_g=operational_carbon(energy_kwh, intensity.gco2_per_kwh),
            embodied_g=embodied_g,
            sci=sci(energy_kwh, intensity.gco2_per_kwh, embodied_g, count),
        )
