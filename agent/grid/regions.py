"""``sci-agent greenest-region``: cloud regions ranked by grid intensity now, and by window.

Each region is looked up with the configured providers for its zone
(``agent/data/cloud-regions.csv``), fetched in parallel. A provider that cannot serve a
region's zone (``ukgrid`` outside Great Britain, ``carbonaware`` with no location) is
left out for that region and named; a provider that fails is named with its error, and
the value then comes from the next one (at worst the yearly average, flagged
``fallback``). A region with no value at all is listed last, with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from agent.config_check import ConfigError
from agent.grid import build_provider, resolve_region
from agent.grid.base import Provider, ProviderError
from agent.grid.chain import IntensityChain
from agent.grid.schedule import Plan, fetch, plan_window, short_time, span
from agent.records import IntensityValue

if TYPE_CHECKING:
    from agent.config import GridConfig

MAX_PARALLEL = 8


@dataclass(frozen=True)
class RegionResult:
    """One region's intensity now, its best window (when asked and forecast), and problems."""

    region: str
    zone: str
    value: IntensityValue | None
    problems: dict[str, str] = field(default_factory=dict)  # provider (or "region") → why
    plan: Plan | None = None
    window_note: str | None = None  # why there is no window, when one was asked for

    def to_dict(self) -> dict[str, object]:
        """The region's entry in the ``--json`` object."""
        v = self.value
        return {
            "region": self.region,
            "zone": self.zone,
            "now_gco2_per_kwh": v.gco2_per_kwh if v else None,
            "provider": v.provider if v else None,
            "value_zone": v.of_zone if v else None,
            "fallback": v.fallback if v else None,
            "problems": self.problems,
            "window": self.plan.to_dict() if self.plan else None,
            "window_note": self.window_note,
        }


def parse_regions(text: str) -> list[tuple[str, str]]:
    """``aws:eu-west-3,gcp:europe-west1`` → ``[(region, zone)]``; ``ConfigError`` naming one."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError("--regions: expected CLOUD:REGION[,CLOUD:REGION...], got nothing")
    return [(name, resolve_region(name, key=f"--regions ({name})")) for name in names]


def region_result(
    config: GridConfig, region: str, zone: str, window: tuple[timedelta, timedelta] | None
) -> RegionResult:
    """Fetch one region's value (and forecast when ``window`` = (duration, within))."""
    # A configured Carbon Aware location is one place; each region here is its own.
    sections: dict[str, Any] = {"carbonaware": replace(config.carbonaware, location=None)}
    grid = replace(config, zone=zone, region=region, **sections)
    providers: list[Provider] = []
    problems: dict[str, str] = {}
    for name in dict.fromkeys(grid.providers):
        try:
            providers.append(build_provider(name, grid, zone))
        except ConfigError as exc:
            problems[name] = f"not usable here: {exc}"
    try:
        chain = IntensityChain(providers, zone)
    except (ProviderError, ValueError) as exc:
        problems["region"] = str(exc)
        return RegionResult(region, zone, None, problems)
    now, value, fc = fetch(chain)
    problems.update(chain.last_errors)
    if window is None:
        return RegionResult(region, zone, value, problems)
    if not fc.values:
        return RegionResult(region, zone, value, problems, None, fc.note)
    plan = plan_window(now, value, fc.values, *window)
    if isinstance(plan, str):
        return RegionResult(region, zone, value, problems, None, plan)
    return RegionResult(region, zone, value, problems, plan)


def rank_by_now(results: Sequence[RegionResult]) -> list[RegionResult]:
    """Lowest intensity now first; regions with no value last (in the order given)."""
    return sorted(results, key=lambda r: (r.value is None, r.value.gco2_per_kwh if r.value else 0))


def rank_by_window(results: Sequence[RegionResult]) -> list[RegionResult]:
    """Lowest best-window mean first; regions with no window left out."""
    with_plan = [r for r in results if r.plan is not None]
    return sorted(with_plan, key=lambda r: r.plan.best.mean_gco2_per_kwh if r.plan else 0.0)


def greenest_region_command(
    config: GridConfig,
    regions: str,
    window: tuple[timedelta, timedelta] | None,
    as_json: bool,
) -> tuple[str, int]:
    """Rank ``regions``; ``(text, exit code)``. Unknown regions raise ``ConfigError``."""
    if window is not None and window[0] > window[1]:
        raise ConfigError("--duration is longer than --within")
    wanted = parse_regions(regions)
    with ThreadPoolExecutor(min(MAX_PARALLEL, len(wanted))) as pool:
        results = list(pool.map(lambda rz: region_result(config, rz[0], rz[1], window), wanted))
    by_now, by_window = rank_by_now(results), rank_by_window(results)
    status = 0 if any(r.value is not None for r in results) else 1
    if as_json:
        body = {
            "by_now": [r.region for r in by_now if r.value is not None],
            "by_window": [r.region for r in by_window],
            "regions": [r.to_dict() for r in by_now],
        }
        return json.dumps(body, indent=2), status
    return _table(by_now, by_window, window), status


def _table(
    by_now: list[RegionResult],
    by_window: list[RegionResult],
    window: tuple[timedelta, timedelta] | None,
) -> str:
    lines = ["By intensity now:"]
    for rank, r in enumerate(by_now, 1):
        if r.value is None:
            lines.append(f"   -  {r.region:<24} {r.zone:<8}  no value")
        else:
            whose = f", value of {r.value.value_zone}" if r.value.value_zone else ""
            flag = f"  (fallback{whose})" if r.value.fallback else ""
            lines.append(
                f"  {rank:>2}. {r.region:<24} {r.zone:<8} {r.value.gco2_per_kwh:>6.0f} gCO2e/kWh"
                f"  {r.value.provider}{flag}"
            )
        lines += [f"        {name}: {why}" for name, why in r.problems.items()]
    if window is None:
        return "\n".join(lines)
    duration, within = window
    lines += ["", f"By the greenest {span(duration)} window ending within {span(within)}:"]
    for rank, r in enumerate(by_window, 1):
        assert r.plan is not None
        best = r.plan.best
        lines.append(
            f"  {rank:>2}. {r.region:<24} {r.zone:<8} {best.mean_gco2_per_kwh:>6.0f} gCO2e/kWh"
            f"  from {short_time(best.start)}  ({r.plan.savings_pct:.1f} % below starting now)"
        )
    missing = [r for r in by_now if r.plan is None]
    lines += [f"   -  {r.region:<24} {r.zone:<8}  no window: {r.window_note}" for r in missing]
    return "\n".join(lines)
