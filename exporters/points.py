"""The one flattening of an interval into the data model's rows, and line protocol.

``flatten`` turns one ``IntervalResult`` into ``Point`` rows, one measurement function
each (``MEASUREMENTS``); both backends write these same rows: InfluxDB as line protocol
(``interval_points``), the embedded store as one table row per point (table =
measurement, columns = tags, fields and ``local`` fields, see
``exporters/store_schema.py``). Adding a measurement is one function here, listed in
``MEASUREMENTS``, plus its table in the schema module.

Each point's timestamp is its interval's end in whole milliseconds, so the same
interval always yields the same points: a replayed write overwrites itself.
Tags stay low-cardinality (host, app, component, source, unit, zone, provider,
signal); a pid is a field, never a tag. Process rows come from ``ProcessRows``
(``exporters/process_rows.py``): grouped by (app, process name), a stable top N per
app, the rest in one ``_other`` row per app, at most a capped number of names per host
per day; the rows still sum to the processes' energy. Their key is (host, app,
process) in both backends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from agent.records import IntervalResult
from exporters.process_rows import DEFAULT_TOP_N, OTHER, ProcessRow, ProcessRows

FieldValue = float | int | bool | str
OTHER_PROCESS = OTHER


@dataclass(frozen=True, slots=True)
class Point:
    """One row of a measurement; ``time_ms`` is milliseconds since the epoch (UTC).

    An absent tag is left out of ``tags`` (NULL in the store); line protocol also leaves
    out a tag whose value is ``""``. ``local`` fields are kept by the embedded store only,
    never sent: a point with no ``fields`` (``intervals``) is the store's alone.
    """

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    time_ms: int
    local: tuple[tuple[str, FieldValue | None], ...] = ()

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


#: A backslash that would escape what follows it (a special character, or the end).
_LOOSE_BACKSLASH = {
    ", ": re.compile(r"\\(?=[, ]|$)"),
    ",= ": re.compile(r"\\(?=[,= ]|$)"),
}


def _escape(text: str, special: str) -> str:
    """Escape a measurement, tag key or tag value.

    Line protocol has no escape for a backslash: InfluxDB keeps one as written
    (``db\\01`` is stored as such, as in the store) unless it ends the text or comes
    before a special character, where it would escape what follows; only there it
    becomes ``/``. A newline has no escape either and becomes a space.
    """
    text = text.replace("\n", " ")
    if "\\" in text:
        text = _LOOSE_BACKSLASH[special].sub("/", text)
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
    """The points of one interval sent as line protocol (``flatten``'s, less the store's
    own). Process rows come from ``rows``, the sink's state across intervals; without
    it, from a fresh ``ProcessRows(top_n)``, which bounds nothing beyond this interval."""
    selector = rows if rows is not None else ProcessRows(top_n)
    processes = selector.rows(result.host, result.end, result.processes)
    return [p for p in flatten(result, processes) if p.fields]


def flatten(result: IntervalResult, processes: Sequence[ProcessRow]) -> list[Point]:
    """Every row of one interval, for every backend; ``processes`` are its process rows
    (``ProcessRows.rows``, decided once per interval by the sink's state)."""
    t = interval_time_ms(result)
    return [p for measurement in MEASUREMENTS for p in measurement(result, processes, t)]


def host_energy(r: IntervalResult, _: Sequence[ProcessRow], t: int) -> Iterator[Point]:
    """Joules and mean watts per component (tags: host, component, source)."""
    seconds = r.interval_s
    for c in r.components:
        watts = c.joules / seconds if seconds > 0 else 0.0
        tags = (("host", r.host), ("component", c.component), ("source", c.source))
        yield Point("host_energy", tags, (("joules", c.joules), ("watts", watts)), t)


def app_energy(r: IntervalResult, _: Sequence[ProcessRow], t: int) -> Iterator[Point]:
    """Each app's energy by kind, then ``_idle`` and ``_unattributed``: the rows sum to
    the host. ``idle_j`` is the static energy the share policy gave the app."""
    for a in r.energy_rows():
        fields: tuple[tuple[str, FieldValue], ...] = (
            ("cpu_j", a.cpu_joules),
            ("dram_j", a.dram_joules),
            ("gpu_j", a.gpu_joules),
            ("idle_j", a.static_joules),
            ("total_j", a.total_joules),
            ("cpu_s", a.cpu_s),
        )
        yield Point("app_energy", (("host", r.host), ("app", a.app)), fields, t)


def process_energy(r: IntervalResult, rows: Sequence[ProcessRow], t: int) -> Iterator[Point]:
    """One point per process row: its processes' joules, CPU time and count."""
    for p in rows:
        tags = (("host", r.host), ("app", p.app), ("process", p.process))
        fields = (("pid", p.pid), ("joules", p.joules), ("cpu_s", p.cpu_s), ("count", p.count))
        yield Point("process_energy", tags, fields, t)


def grid_intensity(r: IntervalResult, _: Sequence[ProcessRow], t: int) -> Iterator[Point]:
    """The grid intensity the interval was scored with (none before scoring)."""
    i = r.intensity
    if i is not None:
        tags = (("zone", i.zone), ("provider", i.provider), ("signal", i.signal))
        fields = (("gco2_per_kwh", i.gco2_per_kwh), ("fallback", i.fallback))
        yield Point("grid_intensity", tags, fields, t, (("interval_s", r.interval_s),))


def sci(r: IntervalResult, _: Sequence[ProcessRow], t: int) -> Iterator[Point]:
    """Each app's SCI terms; an undefined score is absent (line protocol has no null)."""
    for s in r.sci:
        fields: list[tuple[str, FieldValue]] = [
            ("energy_kwh", s.energy_kwh),
            ("intensity", s.intensity_gco2_per_kwh),
            ("operational_g", s.operational_g),
            ("embodied_g", s.embodied_g),
            ("units", s.units),
        ]
        if s.sci is not None:
            fields.append(("sci", s.sci))
        if s.remote_g or s.remote_energy_kwh:  # the app's AI calls (already in its sci)
            fields += [("remote_g", s.remote_g), ("remote_energy_kwh", s.remote_energy_kwh)]
        tags: tuple[tuple[str, str], ...] = (("host", r.host), ("app", s.app))
        if s.unit is not None:
            tags += (("unit", s.unit),)
        yield Point("sci", tags, tuple(fields), t, (("interval_s", r.interval_s),))


def intervals(r: IntervalResult, _: Sequence[ProcessRow], t: int) -> Iterator[Point]:
    """The interval's measured facts, the store's alone (InfluxDB has them in app_energy)."""
    local: tuple[tuple[str, FieldValue], ...] = (
        ("start_ms", round(r.start.timestamp() * 1000)),
        ("interval_s", r.interval_s),
        ("total_j", r.total_joules),
        ("idle_j", r.idle_joules),
        ("unattributed_j", r.unattributed_joules),
    )
    yield Point("intervals", (("host", r.host),), (), t, local)


def remote_inference(r: IntervalResult, _: Sequence[ProcessRow], t: int) -> Iterator[Point]:
    """An app's remote AI calls per (provider, model), estimated (``source=estimate``).

    The energy is the remote data centre's, never the host's: no host or app energy row
    includes it; the app's ``sci`` row does (``remote_g``).
    """
    for x in r.remote:
        tags = (
            ("host", r.host),
            ("app", x.app),
            ("provider", x.provider),
            ("model", x.model),
            ("source", x.source),
        )
        fields: tuple[tuple[str, FieldValue], ...] = (
            ("calls", x.calls),
            ("cached_calls", x.cached_calls),
            ("unestimated_calls", x.unestimated_calls),
            ("input_tokens", x.input_tokens),
            ("output_tokens", x.output_tokens),
            ("energy_kwh", x.energy_kwh),
            ("energy_kwh_min", x.energy_kwh_min),
            ("energy_kwh_max", x.energy_kwh_max),
            ("usage_g", x.usage_g),
            ("embodied_g", x.embodied_g),
            ("mix_gco2_per_kwh", x.mix_gco2_per_kwh),
            ("mix_zone", x.mix_zone),
            ("method", x.method),
            ("error", x.error),
        )
        yield Point("remote_inference", tags, fields, t, (("interval_s", r.interval_s),))


Measurement = Callable[[IntervalResult, Sequence[ProcessRow], int], Iterator[Point]]
#: The measurements of an interval, in the order written (each a table of the store).
MEASUREMENTS: tuple[Measurement, ...] = (
    intervals,
    host_energy,
    app_energy,
    process_energy,
    grid_intensity,
    sci,
    remote_inference,
)
