"""``sci-agent compare RUN_A RUN_B``: two measured runs side by side, with B/A.

Each run is a ``measure --json`` file or a run id (a unique prefix will do) in the
store's ``runs`` table. A note says when the two are not measured alike: different
hosts, power models (the components' source and model), grid zones or units.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import dataclass
from typing import Any

from agent.config import Config
from exporters.store_reader import read_runs
from exporters.store_schema import StoreError
from sci import humanize

#: (label, key path in the run JSON, unit) of the figures compared.
FIGURES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("energy", ("energy_joules",), "J"),
    ("energy (E, with PUE)", ("energy_kwh",), "kWh"),
    ("carbon", ("carbon_g", "total"), "gCO2e"),
    ("  operational", ("carbon_g", "operational"), "gCO2e"),
    ("  embodied", ("carbon_g", "embodied"), "gCO2e"),
    ("duration", ("duration_s",), "s"),
    ("CPU time", ("cpu_s",), "s"),
    ("SCI", ("sci", "g_per_unit"), "gCO2e/unit"),
)
_REQUIRED = ("run_id", "host", "command", "energy_joules", "carbon_g", "duration_s", "cpu_s")


class CompareError(Exception):
    """A run that cannot be found or read; the message says which and why."""


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    a: float | None
    b: float | None

    @property
    def ratio(self) -> float | None:
        """B/A; None when either is missing or A is 0."""
        if self.a is None or self.b is None or self.a == 0:
            return None
        return self.b / self.a


def load_run(ref: str, store_path: str) -> dict[str, Any]:
    """The run ``ref`` names: a ``measure --json`` file, else a run id (prefix) in the store."""
    if os.path.isfile(ref):
        return _from_file(ref)
    try:
        found = read_runs(store_path, ref)
    except StoreError as exc:
        raise CompareError(str(exc)) from None
    if not found:
        raise CompareError(f"{ref}: no such file, and no run with that id in {store_path}")
    if len(found) > 1:
        ids = ", ".join(r["run_id"] for r in found[:5])
        raise CompareError(f"{ref}: matches {len(found)} runs ({ids}); give more of the id")
    return found[0]


def _from_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except OSError as exc:
        raise CompareError(f"{path}: cannot read it ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompareError(f"{path}: not a measure --json file ({exc})") from None
    if not isinstance(run, dict):
        raise CompareError(f"{path}: not a measure --json file (not a JSON object)")
    missing = [k for k in _REQUIRED if k not in run]
    if missing:
        raise CompareError(f"{path}: not a measure --json file (no {', '.join(missing)})")
    return run


def figures(a: dict[str, Any], b: dict[str, Any]) -> list[Figure]:
    """The compared figures of ``a`` and ``b``, in ``FIGURES`` order."""
    return [Figure(name, unit, _number(a, path), _number(b, path)) for name, path, unit in FIGURES]


def _number(run: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = run
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def notes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Why the two runs may not compare like for like."""
    out = []
    if a.get("host") != b.get("host"):
        out.append(f"different hosts: {a.get('host')} and {b.get('host')}")
    if _models(a) != _models(b):
        out.append(f"different power models: {_models(a) or 'none'} and {_models(b) or 'none'}")
    zone_a, zone_b = _zone(a), _zone(b)
    if zone_a != zone_b:
        out.append(f"different grid zones: {zone_a} and {zone_b}")
    unit_a, unit_b = (a.get("sci") or {}).get("unit"), (b.get("sci") or {}).get("unit")
    if unit_a != unit_b:
        out.append(f"different units: {unit_a or 'none'} and {unit_b or 'none'}")
    return out


def _models(run: dict[str, Any]) -> str:
    parts = sorted(
        f"{c.get('component')} ({c.get('source')}{': ' + c['model'] if c.get('model') else ''})"
        for c in run.get("components") or []
    )
    return "; ".join(parts)


def _zone(run: dict[str, Any]) -> str | None:
    intensity = run.get("intensity") or {}
    zone = intensity.get("zone")
    return str(zone) if zone is not None else None


def compare_json(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The comparison as one JSON object."""
    return {
        "a": _summary(a),
        "b": _summary(b),
        "figures": [
            {"name": f.name.strip(), "unit": f.unit, "a": f.a, "b": f.b, "ratio": f.ratio}
            for f in figures(a, b)
        ],
        "notes": notes(a, b),
    }


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("run_id", "app", "host", "command", "start", "exit_code")
    return {k: run.get(k) for k in keys}


def compare_text(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The comparison as a table: A, B, and B/A."""
    lines = [
        f"A  {a['run_id']}  {_command(a)}  ({a.get('host')}, {a.get('start', '?')})",
        f"B  {b['run_id']}  {_command(b)}  ({b.get('host')}, {b.get('start', '?')})",
        "",
        f"{'':<22}{'A':>14}{'B':>14}{'B/A':>10}",
    ]
    for f in figures(a, b):
        if f.a is None and f.b is None:
            continue
        ratio = "" if f.ratio is None else f"{f.ratio:.3g}×"
        a_text, b_text = _value(f.a, f.unit), _value(f.b, f.unit)
        lines.append(f"{f.name:<22}{a_text:>14}{b_text:>14}{ratio:>10}{_suffix(f.unit)}")
    lines.extend(f"note: {n}" for n in notes(a, b))
    return "\n".join(lines)


def _command(run: dict[str, Any]) -> str:
    command = run.get("command")
    text = shlex.join(map(str, command)) if isinstance(command, list) else str(command)
    text = text.replace("\n", "\\n")  # one line per run
    return text if len(text) <= 60 else text[:57] + "..."


def _value(x: float | None, unit: str) -> str:
    """``x`` with an SI prefix for its unit (never ``1e-05``); ``-`` when missing."""
    if x is None:
        return "-"
    if unit.startswith("gCO2e"):
        return humanize.grams(x)
    shown = {"J": humanize.joules, "kWh": humanize.kwh, "s": humanize.seconds}
    return shown[unit](x) if unit in shown else humanize.number(x)


def _suffix(unit: str) -> str:
    """What follows the values: CO2e, and per what for an SCI."""
    return "  CO2e" + unit.removeprefix("gCO2e") if unit.startswith("gCO2e") else ""


def compare_command(
    cfg: Config, ref_a: str, ref_b: str, as_json: bool, store_path: str | None = None
) -> str:
    """What ``sci-agent compare`` prints; raises ``CompareError``."""
    path = store_path or cfg.store.path
    a, b = load_run(ref_a, path), load_run(ref_b, path)
    return json.dumps(compare_json(a, b), indent=2) if as_json else compare_text(a, b)
