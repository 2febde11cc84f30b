"""The JSON form of an interval: the stable object of ``once --json`` and the JSON lines.

Its keys are a stable interface; the CLI (``once --json``) and the JSONL sink both use
``to_json``, so the two cannot drift apart.
"""

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
    calling = {x.app for x in r.remote}  # apps that made AI calls in the interval
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
                # the app's remote AI calls (estimated, already in ``sci``); null without calls
                "remote_g": s.remote_g if s.app in calling else None,
                "remote_energy_kwh": s.remote_energy_kwh if s.app in calling else None,
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
