"""A measured run as the ``measure --json`` object, and as the text ``measure`` prints.

The JSON object is the run's one representation: printed by ``measure --json``, kept
whole in the store's ``runs`` table, and read back by ``compare`` (from the store or
from a file). Its keys are listed in docs/measure.md.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.jobs.meter import JobResult
from agent.method import method_to_json
from agent.records_json import iso
from sci import humanize

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class RunFacts:
    """What ``measure`` knows about a run beyond the meter's result."""

    command: tuple[str, ...]
    exit_code: int
    signal: str | None  # the signal that ended the command, if one did
    units: float | None
    unit: str | None
    tracking: str  # how the job's processes were found
    left_running: tuple[int, ...]  # orphans still running after the grace period


def run_json(result: JobResult, facts: RunFacts) -> dict[str, Any]:
    """The ``measure --json`` object of one run."""
    t = result.totals
    last = result.intervals[-1] if result.intervals else None
    method = last.method if last is not None else None
    readings = last.components if last is not None else ()
    g_per_unit = result.sci(facts.units) if facts.units is not None else None
    return {
        "run_id": result.job_id,
        "app": result.app,
        "host": result.host,
        "command": list(facts.command),
        "exit_code": facts.exit_code,
        "signal": facts.signal,
        "start": iso(result.start),
        "end": iso(result.end),
        "duration_s": result.duration_s,
        "cpu_s": t.cpu_s,
        "energy_joules": t.energy_joules,
        "energy_kwh": t.energy_kwh,
        "static_joules": t.static_joules,
        "joules_by_kind": {kind: t.joules.get(kind, 0.0) for kind in ("cpu", "dram", "gpu")},
        "components": [
            {"component": c.component, "kind": c.kind, "source": c.source, "model": c.model}
            for c in readings
        ],
        "carbon_g": {
            "operational": t.operational_g,
            "embodied": t.embodied_g,
            "total": t.carbon_g,
        },
        "intensity": _intensity(result),
        "sci": {
            "units": facts.units,
            "unit": facts.unit if facts.units is not None else None,
            "g_per_unit": g_per_unit,
        },
        "share_policy": method.share_policy if method is not None else None,
        "pue": method.pue if method is not None else None,
        "method": method_to_json(method) if method is not None else None,
        "tracking": facts.tracking,
        "left_running": list(facts.left_running),
        "intervals": t.intervals,
    }


def _intensity(result: JobResult) -> dict[str, Any] | None:
    """The run's intensity: its carbon over its energy (the last value when no energy)."""
    value = result.intensity
    if value is None:
        return None
    t = result.totals
    effective = t.operational_g / t.energy_kwh if t.energy_kwh > 0 else value.gco2_per_kwh
    return {
        "gco2_per_kwh": effective,
        "zone": value.zone,
        "value_zone": value.value_zone,
        "provider": value.provider,
        "signal": value.signal,
        "fallback": value.fallback,
    }


def run_text(run: dict[str, Any]) -> str:
    """The summary ``measure`` prints: one labelled line per figure."""
    command = shlex.join(run["command"]).replace("\n", "\\n")
    lines = [f"sci-agent measure: {command}"]
    add = lines.append
    add(f"  run id      {run['run_id']}  (app {run['app']}, host {run['host']})")
    ended = f" (killed by {run['signal']})" if run["signal"] else ""
    add(f"  exit code   {run['exit_code']}{ended}")
    add(f"  duration    {humanize.seconds(run['duration_s'])}")
    add(f"  CPU time    {humanize.seconds(run['cpu_s'])}")
    add(f"  energy      {_joules(run['energy_joules'])} ({humanize.kwh(run['energy_kwh'])})")
    for kind, joules in run["joules_by_kind"].items():
        parts = [c for c in run["components"] if c["kind"] == kind]
        if not parts and not joules:
            continue
        add(f"    {kind:<9} {_joules(joules):>12}  {_sources(parts)}")
    policy = run["share_policy"] or "?"
    add(f"    {'static':<9} {_joules(run['static_joules']):>12}  share of static energy ({policy})")
    c = run["carbon_g"]
    add(
        f"  carbon      {humanize.grams(c['total'])} CO2e (operational"
        f" {humanize.grams(c['operational'])}, embodied {humanize.grams(c['embodied'])})"
    )
    i = run["intensity"]
    if i is not None:
        add(
            f"  intensity   {humanize.number(i['gco2_per_kwh'])} gCO2e/kWh, zone {i['zone']}, "
            f"provider {i['provider']}{' (fallback)' if i['fallback'] else ''}"
        )
    sci = run["sci"]
    if sci["g_per_unit"] is not None:
        per = f"{sci['unit']} ({humanize.number(sci['units'])} {sci['unit']}s)"
        add(f"  SCI         {humanize.grams(sci['g_per_unit'])} CO2e per {per}")
    add(f"  tracking    {run['tracking']}")
    if run["left_running"]:
        pids = ", ".join(map(str, run["left_running"]))
        add(f"  note        still running after the grace period, not measured further: {pids}")
    if run.get("note"):
        add(f"  note        {run['note']}")
    return "\n".join(lines)


def _sources(parts: Sequence[dict[str, Any]]) -> str:
    return "; ".join(
        f"{p['component']} ({p['source']}{': ' + p['model'] if p['model'] else ''})" for p in parts
    )


def _joules(j: float) -> str:
    return humanize.joules(j)
