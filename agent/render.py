"""Turn an interval into the stable JSON object of ``once --json``, or a table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.method import method_to_json
from agent.records import IntervalResult
from sci import humanize
from sci.embodied import host_embodied_share


def iso(t: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``."""
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_json(r: IntervalResult) -> dict[str, Any]:
    """The documented ``once --json`` object; keys are a stable interface."""
    return {
        "host": r.host,
        "start": iso(r.start),
        "end": iso(r.end),
        "interval_s": r.interval_s,
        "components": [
            {
                "component": c.component,
                "source": c.source,
                "joules": c.joules,
                "static_joules": c.static_joules,
                "static_source": c.static_source,
                "model": c.model,
            }
            for c in r.components
        ],
        "total_joules": r.total_joules,
        "idle_joules": r.idle_joules,
        "unattributed_joules": r.unattributed_joules,
        "apps": [
            {
                "app": a.app,
                "joules": a.joules,
                "cpu_joules": a.cpu_joules,
                "dram_joules": a.dram_joules,
                "gpu_joules": a.gpu_joules,
                "dynamic_joules": a.dynamic_joules,
                "static_joules": a.static_joules,
                "cpu_share": a.cpu_share,
                "dram_share": a.dram_share,
                "gpu_share": a.gpu_share,
            }
            for a in r.apps
        ],
        "processes": [
            {"pid": p.pid, "name": p.name, "app": p.app, "joules": p.joules, "cpu_s": p.cpu_s}
            for p in r.processes
        ],
        "intensity": None
        if r.intensity is None
        else {
            "zone": r.intensity.zone,
            "value_zone": r.intensity.of_zone,
            "gco2_per_kwh": r.intensity.gco2_per_kwh,
            "provider": r.intensity.provider,
            "signal": r.intensity.signal,
            "fallback": r.intensity.fallback,
        },
        "embodied_g": embodied_g(r),
        "method": None if r.method is None else method_to_json(r.method),
        "sci": [
            {
                "app": s.app,
                "unit": s.unit,
                "units": s.units,
                "energy_kwh": s.energy_kwh,
                "operational_g": s.operational_g,
                "embodied_g": s.embodied_g,
                "sci": s.sci,
            }
            for s in r.sci
        ],
    }


def embodied_g(r: IntervalResult) -> float | None:
    """The host's embodied carbon for the interval, after VM scaling (None: no method)."""
    if r.method is None:
        return None
    m = r.method
    return host_embodied_share(m.embodied_kgco2e, m.lifespan_years, max(0.0, r.interval_s), 1.0)


def to_table(r: IntervalResult, top: int = 10) -> str:
    """A readable summary: components, apps, the top processes (``humanize`` numbers)."""
    seconds = r.interval_s or 1.0
    j, w = humanize.joules, humanize.watts
    lines = [
        f"{r.host}  {iso(r.start)} → {iso(r.end)}  ({humanize.seconds(r.interval_s)})",
        "",
        f"{'component':<12}{'source':<8}{'energy':>12}{'power':>12}",
    ]
    for c in r.components:
        lines.append(f"{c.component:<12}{c.source:<8}{j(c.joules):>12}{w(c.joules / seconds):>12}")
    lines.append(f"{'total':<20}{j(r.total_joules):>12}{w(r.total_joules / seconds):>12}")
    lines.append(f"{'  idle':<20}{j(r.idle_joules):>12}")
    lines.append(f"{'  unattributed':<20}{j(r.unattributed_joules):>12}")
    lines += [
        "",
        f"{'app':<24}{'energy':>12}{'cpu':>12}{'dram':>12}{'gpu':>12}{'static':>12}",
    ]
    for a in r.apps[:top]:
        lines.append(
            f"{a.app[:23]:<24}{j(a.joules):>12}{j(a.cpu_joules):>12}"
            f"{j(a.dram_joules):>12}{j(a.gpu_joules):>12}{j(a.static_joules):>12}"
        )
    if len(r.apps) > top:
        lines.append(f"… and {len(r.apps) - top} more apps")
    lines += ["", f"{'pid':>8}  {'process':<20}{'app':<20}{'energy':>12}{'cpu time':>10}"]
    for p in r.processes[:top]:
        lines.append(
            f"{p.pid:>8}  {p.name[:19]:<20}{p.app[:19]:<20}{j(p.joules):>12}"
            f"{humanize.seconds(p.cpu_s):>10}"
        )
    if len(r.processes) > top:
        lines.append(f"… and {len(r.processes) - top} more processes")
    lines += _carbon_lines(r, top)
    modelled = [c for c in r.components if c.source == "model"]
    if modelled:
        lines += ["", "note: components with source=model are estimated by the power model:"]
        lines += [f"  {c.component}: {c.model}" for c in modelled]
    if r.method is not None:
        grams = humanize.grams(embodied_g(r) or 0.0)
        lines += ["", f"embodied: {grams} CO2e this interval ({r.method.embodied_basis})"]
    return "\n".join(lines)


def _carbon_lines(r: IntervalResult, top: int) -> list[str]:
    """The grid intensity and each app's carbon and SCI (none without an intensity)."""
    if r.intensity is None:
        return []
    i = r.intensity
    flag = ", fallback" if i.fallback else ""
    flag += f", the value of {i.value_zone}" if i.value_zone else ""
    lines = [
        "",
        f"grid {i.zone}: {humanize.intensity(i.gco2_per_kwh)} ({i.provider}, {i.signal}{flag})",
        f"{'app':<24}{'unit':<12}{'units':>10}{'carbon CO2e':>14}{'SCI per unit':>14}",
    ]
    for s in sorted(r.sci, key=lambda s: s.carbon_g, reverse=True)[:top]:
        score = humanize.grams(s.sci) if s.sci is not None else "no units"
        lines.append(
            f"{s.app[:23]:<24}{(s.unit or '-')[:11]:<12}{humanize.number(s.units):>10}"
            f"{humanize.grams(s.carbon_g):>14}{score:>14}"
        )
    return lines


def summary_line(r: IntervalResult, top: int = 3) -> str:
    """One line per interval for ``run --print``: watts per component, top apps."""
    seconds = r.interval_s or 1.0
    j = humanize.joules
    parts = " ".join(f"{c.component}={humanize.watts(c.joules / seconds)}" for c in r.components)
    apps = ", ".join(f"{a.app} {j(a.joules)}" for a in r.apps[:top]) or "none"
    line = (
        f"{r.end.strftime('%H:%M:%S')} {j(r.total_joules):>9} in {humanize.seconds(r.interval_s)}"
        f" [{parts}] idle {j(r.idle_joules)} unattributed {j(r.unattributed_joules)} | {apps}"
    )
    if r.intensity is not None:
        carbon = sum(s.carbon_g for s in r.sci)
        line += f" | {humanize.grams(carbon)} CO2e @ {humanize.intensity(r.intensity.gco2_per_kwh)}"
    return line
