"""Intervals as time-series points (the design brief's data model) and line protocol.

Each point's timestamp is its interval's end in whole milliseconds, so the same
interval always yields the same points: a replayed write overwrites itself.
Tags stay low-cardinality (host, app, component, source, unit, zone, provider,
signal); a pid is a field, never a tag. Process rows come from ``ProcessRows``
(``exporters/process_rows.py``): grouped by (app, process name), a stable top N per
app, the rest in one ``_other`` row per app, at most a capped number of names per host
per day; the rows still sum to the processes' energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.records import IntervalResult
from exporters.process_rows import DEFAULT_TOP_N, OTHER, ProcessRows

FieldValue = float | int | bool | str
OTHER_PROCESS = OTHER


@dataclass(frozen=True, slots=True)
class Point:
    """One line-protocol point; ``time_ms`` is milliseconds since the epoch (UTC)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    time_ms: int

    def to_line(self) -> str:
        """Serialise as InfluxDB line protocol (millisecond precision)."""
        head = _escape(self.measurement, ", ")
        for key, value in sorted(self.tags):
            if value != "":  # an empty tag value is invalid line protocol
                head += f",{_escape(key, ',= ')}={_escape(value, ',= ')}"
        body = ",".join(
            f"{_escape(k, ',= ')}={_field(v)}"
            for k, v in self.fields
            if not (isinstance(v, float) and not math.isfinite(v))  # no NaN/inf in the protocol
        )
        return f"{head} {body} {self.time_ms}"


def _escape(text: str, special: str) -> str:
    """Escape a measurement, tag key or tag value.

    Line protocol has no escape for a backslash in these (``a\\b`` would be stored
    doubled, a trailing one breaks the line) nor for a newline: both become ``/`` and a
    space; names with either are vanishingly rare (process names, cgroup paths).
    """
    text = text.replace("\\", "/").replace("\n", " ")
    for ch in special:
        text = text.replace(ch, "\\" + ch)
    return text


def _field(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def interval_time_ms(result: IntervalResult) -> int:
    """The deterministic timestamp of every point of an interval: its end, in ms."""
    return round(result.end.timestamp() * 1000)


def interval_points(
    result: IntervalResult, top_n: int = DEFAULT_TOP_N, rows: ProcessRows | None = None
) -> list[Point]:
    """Every point of one interval, following the data model. Process rows come from
    ``rows``, the sink's state across intervals; without it, from a fresh
    ``ProcessRows(top_n)``, which bounds nothing beyond this one interval."""
    t = interval_time_ms(result)
    host = result.host
    seconds = result.interval_s
    points = [
        Point(
            "host_energy",
            (("host", host), ("component", c.component), ("source", c.source)),
            (("joules", c.joules), ("watts", c.joules / seconds if seconds > 0 else 0.0)),
            t,
        )
        for c in result.components
    ]
    for a in result.energy_rows():  # idle_j: the static share the policy gave the app
        points.append(
            Point(
                "app_energy",
                (("host", host), ("app", a.app)),
                (
                    ("cpu_j", a.cpu_joules),
                    ("dram_j", a.dram_joules),
                    ("gpu_j", a.gpu_joules),
                    ("idle_j", a.static_joules),
                    ("total_j", a.total_joules),
                    ("cpu_s", a.cpu_s),
                ),
                t,
            )
        )
    selector = rows if rows is not None else ProcessRows(top_n)
    for r in selector.rows(host, result.end, result.processes):
        points.append(
            Point(
                "process_energy",
                (("host", host), ("app", r.app), ("process", r.process)),
                (("pid", r.pid), ("joules", r.joules), ("cpu_s", r.cpu_s), ("count", r.count)),
                t,
            )
        )
    if result.intensity is not None:
        i = result.intensity
        points.append(
            Point(
                "grid_intensity",
                (("zone", i.zone), ("provider", i.provider), ("signal", i.signal)),
                (("gco2_per_kwh", i.gco2_per_kwh), ("fallback", i.fallback)),
                t,
            )
        )
    for s in result.sci:
        fields: list[tuple[str, FieldValue]] = [
            ("energy_kwh", s.energy_kwh),
            ("intensity", s.intensity_gco2_per_kwh),
            ("operational_g", s.operational_g),
            ("embodied_g", s.embodied_g),
            ("units", s.units),
        ]
        if s.sci is not None:  # line protocol has no null: an undefined score is absent
            fields.append(("sci", s.sci))
        if s.remote_g or s.remote_energy_kwh:  # the app's AI calls, in ``sci`` too
            fields += [("remote_g", s.remote_g), ("remote_energy_kwh", s.remote_energy_kwh)]
        points.append(
            Point("sci", (("host", host), ("app", s.app), ("unit", s.unit or "")), tuple(fields), t)
        )
    points += remote_inference_points(result)
    return points


def remote_inference_points(result: IntervalResult) -> list[Point]:
    """The ``remote_inference`` points: an app's AI calls per (provider, model), estimated.

    Tags host, app, provider, model, source (``estimate``); the energy is the remote
    data centre's, never the host's, so no host or app energy row includes it.
    """
    t = interval_time_ms(result)
    return [
        Point(
            "remote_inference",
            (
                ("host", result.host),
                ("app", r.app),
                ("provider", r.provider),
                ("model", r.model),
                ("source", r.source),
            ),
            (
                ("calls", r.calls),
                ("cached_calls", r.cached_calls),
                ("unestimated_calls", r.unestimated_calls),
                ("input_tokens", r.input_tokens),
                ("output_tokens", r.output_tokens),
                ("energy_kwh", r.energy_kwh),
                ("energy_kwh_min", r.energy_kwh_min),
                ("energy_kwh_max", r.energy_kwh_max),
                ("usage_g", r.usage_g),
                ("embodied_g", r.embodied_g),
                ("mix_gco2_per_kwh", r.mix_gco2_per_kwh),
                ("mix_zone", r.mix_zone),
                ("method", r.method),
            ),
            t,
        )
        for r in result.remote
    ]
