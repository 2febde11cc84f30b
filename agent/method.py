"""The method in force for an interval (``Method``), built after scoring, and its JSON.

The Method is recorded with the data (the store keeps one row per change), so a
report over a period states what produced each part of it: the power model and its
coefficients, the static floors, the embodied figure and its basis, the share policy,
the PUE, the grid zone and the provider chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.records import IntervalResult, Method
from sci.embodied import EmbodiedFigure


def _watts(joules: float, seconds: float) -> float:
    """Mean watts, to 3 significant figures so a learned floor's jitter is not a change."""
    return float(f"{joules / seconds:.3g}") if seconds > 0 else 0.0


def build_method(
    result: IntervalResult,
    *,
    embodied: EmbodiedFigure,
    lifespan_years: float,
    share_policy: str,
    pue: float,
    zone: str,
    providers: Sequence[str],
) -> Method:
    """The Method of ``result``: components and models from its readings, the rest given."""
    seconds = result.measured_s or result.interval_s  # the sensors' own clock: no jitter
    return Method(
        components=tuple((c.component, c.source, c.model or "") for c in result.components),
        static_watts=tuple(
            (c.component, _watts(c.static_joules, seconds), c.static_source)
            for c in result.components
        ),
        embodied_kgco2e=round(embodied.kgco2e, 6),
        lifespan_years=lifespan_years,
        embodied_basis=embodied.basis,
        share_policy=share_policy,
        pue=pue,
        zone=result.intensity.zone if result.intensity is not None else zone,
        providers=tuple(providers),
    )


def method_to_json(m: Method) -> dict[str, Any]:
    """The Method as the JSON object of ``once --json``, the JSON lines and the store."""
    return {
        "components": [
            {"component": c, "source": s, "model": model or None} for c, s, model in m.components
        ],
        "static_watts": [
            {"component": c, "watts": w, "static_source": s} for c, w, s in m.static_watts
        ],
        "embodied_kgco2e": m.embodied_kgco2e,
        "lifespan_years": m.lifespan_years,
        "embodied_basis": m.embodied_basis,
        "share_policy": m.share_policy,
        "pue": m.pue,
        "zone": m.zone,
        "providers": list(m.providers),
    }


def method_from_json(d: dict[str, Any]) -> Method:
    """The inverse of ``method_to_json`` (raises ``KeyError``/``TypeError`` on bad input)."""
    return Method(
        components=tuple(
            (c["component"], c["source"], c.get("model") or "") for c in d["components"]
        ),
        static_watts=tuple(
            (c["component"], float(c["watts"]), c["static_source"]) for c in d["static_watts"]
        ),
        embodied_kgco2e=float(d["embodied_kgco2e"]),
        lifespan_years=float(d["lifespan_years"]),
        embodied_basis=str(d["embodied_basis"]),
        share_policy=str(d["share_policy"]),
        pue=float(d["pue"]),
        zone=str(d["zone"]),
        providers=tuple(d["providers"]),
    )


def describe(m: Method) -> dict[str, str]:
    """The Method in words, one line per part, for reports, doctor and the dashboard."""
    models = [f"{c} ({s}): {model}" if model else f"{c} ({s})" for c, s, model in m.components]
    floors = [f"{c} {w:g} W ({s or 'none known yet'})" for c, w, s in m.static_watts]
    return {
        "components and models": "; ".join(models) or "none",
        "static floors": ", ".join(floors) or "none",
        "embodied emissions (TE)": f"{m.embodied_kgco2e:g} kgCO2e: {m.embodied_basis}",
        "expected lifespan (EL)": f"{m.lifespan_years:g} years",
        "share policy": m.share_policy,
        "PUE": f"{m.pue:g}",
        "grid zone": m.zone,
        "intensity providers (in order)": ", ".join(m.providers),
    }
