"""Turn an interval into the stable JSON object of ``once --json``, or a table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.method import method_to_json
from agent.records import IntervalResult
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
    """A readable summary: components, apps, the top processes."""
    seconds = r.interval_s or 1.0
    lines = [
        f"{r.host}  {iso(r.start)} → {iso(r.end)}  ({r.interval_s:.2f} s)",
        "",
        f"{'component':<12}{'source':<8}{'joules':>12}{'watts':>10}",
    ]
    for c in r.components:
        lines.append(f"{c.component:<12}{c.source:<8}{c.joules:>12.3f}{c.joules / seconds:>10.2f}")
    lines.append(f"{'total':<20}{r.total_joules:>12.3f}{r.total_joules / seconds:>10.2f}")
    lines.append(f"{'  idle':<20}{r.idle_joules:>12.3f}")
    lines.append(f"{'  unattributed':<20}{r.unattributed_joules:>12.3f}")
    lines += [
        "",
        f"{'app':<24}{'joules':>12}{'cpu J':>10}{'dram J':>10}{'gpu J':>10}{'static J':>10}",
    ]
    for a in r.apps[:top]:
        lines.append(
            f"{a.app[:23]:<24}{a.joules:>12.3f}{a.cpu_joules:>10.3f}"
            f"{a.dram_joules:>10.3f}{a.gpu_joules:>10.3f}{a.static_joules:>10.3f}"
        )
    if len(r.apps) > top:
        lines.append(f"… and {len(r.apps) - top} more apps")
    lines += ["", f"{'pid':>8}  {'process':<20}{'app':<20}{'joules':>10}{'cpu s':>8}"]
    for p in r.processes[:top]:
        lines.append(
            f"{p.pid:>8}  {p.name[:19]:<20}{p.app[:19]:<20}{p.joules:>10.3f}{p.cpu_s:>8.2f}"
        )
    if len(r.processes) > top:
        lines.append(f"… and {len(r.processes) - top} more processes")
    if r.intensity is not None:
        i = r.intensity
        flag = ", fallback" if i.fallback else ""
        flag += f", the value of {i.value_zone}" if i.value_zone else ""
        lines += [
            "",
            f"grid {i.zone}: {i.gco2_per_kwh:.1f} gCO2e/kWh ({i.provider}, {i.signal}{flag})",
            f"{'app':<24}{'unit':<12}{'units':>8}{'carbon mg':>12}{'SCI mg/unit':>14}",
        ]
        for s in sorted(r.sci, key=lambda s: s.carbon_g, reverse=True)[:top]:
            score = f"{s.sci * 1000:>14.4f}" if s.sci is not None else f"{'no units':>14}"
            lines.append(
                f"{s.app[:23]:<24}{(s.unit or '-')[:11]:<12}{s.units:>8g}"
                f"{s.carbon_g * 1000:>12.4f}{score}"
            )
    modelled = [c for c in r.components if c.source == "model"]
    if modelled:
        lines += ["", "note: components with source=model are estimated by the power model:"]
        lines += [f"  {c.component}: {c.model}" for c in modelled]
    if r.method is not None:
        grams = embodied_g(r) or 0.0
        lines += ["", f"embodied: {grams:.4f} g this interval ({r.method.embodied_basis})"]
    return "\n".join(lines)


def summary_line(r: IntervalResult, top: int = 3) -> str:
    """One line per interval for ``run --print``: watts per component, top apps."""
    seconds = r.interval_s or 1.0
    parts = " ".join(f"{c.component}={c.joules / seconds:.1f}W" for c in r.components)
    apps = ", ".join(f"{a.app} {a.joules:.2f}J" for a in r.apps[:top]) or "none"
    line = (
        f"{r.end.strftime('%H:%M:%S')} {r.total_joules:8.2f} J in {r.interval_s:.1f}s [{parts}]"
        f" idle {r.idle_joules:.2f}J unattributed {r.unattributed_joules:.2f}J | {apps}"
    )
    if r.intensity is not None:
        carbon = sum(s.carbon_g for s in r.sci)
        line += f" | {carbon * 1000:.3f} mgCO2e @ {r.intensity.gco2_per_kwh:.0f} g/kWh"
    return line
