"""Turn an interval into readable text: the table of ``once``, the line of ``run --print``.

Its JSON form (``once --json``) is ``agent.records_json.to_json``."""

from __future__ import annotations

from agent.records import IntervalResult
from agent.records_json import embodied_g, iso
from sci import humanize


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
