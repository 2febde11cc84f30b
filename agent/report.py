"""``sci-agent report``: an app's SCI over a window, with what the SCI spec asks to disclose.

The score of a window is Σ carbon / Σ units over its intervals (never a mean of
per-interval ratios); I is time-weighted; everything is read from the store,
including the method in force when the data were recorded (the ``method`` table: the
power model and its coefficients, static floors, TE and its basis, share policy, PUE,
zone and providers), each change listed with its time. InfluxDB holds no method: a
report from it says so and shows today's config instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.embodied import HOW_TO_SET
from agent.grid.builtin import stored_value_zone
from agent.method import describe, method_from_json
from exporters.store_reader import REMOTE_SUMS, StoreReader, StoreReadError, open_reader
from sci import humanize

_DURATION = re.compile(r"^([-+]?\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
LEFT_OUT = (
    "network transfer (not measured)",
    "storage devices (not measured)",
    "cooling and power distribution beyond the configured PUE",
    "embedded systems and end-user devices",
)


class ReportError(ValueError):
    """A report cannot be made; the message says why."""


def parse_since(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d`` → a timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ReportError(f"--since: expected a duration like 15m, 24h or 7d, got {text!r}")
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds <= 0:
        raise ReportError(
            f"--since: must be a positive duration such as 15m, 24h or 7d, got {text!r}"
        )
    return timedelta(seconds=seconds)


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 time; naive times are UTC."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(f"{option}: expected an ISO 8601 time, got {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class SciReport:
    """Everything a report shows; ``to_markdown``/``to_json`` render it."""

    app: str
    unit: str | None
    period_start: str
    period_end: str
    hosts: list[str]
    intervals: int
    sci_g_per_unit: float | None
    carbon_g: float
    energy_kwh: float
    intensity_gco2_per_kwh: float | None
    operational_g: float
    embodied_g: float
    units: float
    measured: list[str] = field(default_factory=list)
    modelled: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    intensity_sources: list[dict[str, Any]] = field(default_factory=list)
    methodology: dict[str, Any] = field(default_factory=dict)
    methods: list[dict[str, Any]] = field(default_factory=list)  # [{host, since, method}]
    #: the app's remote AI calls in the window (estimated; empty when it made none)
    remote: dict[str, Any] = field(default_factory=dict)

    @property
    def embodied_is_default(self) -> bool:
        """Whether any recorded method charged a default (not configured) TE."""
        return any(
            not m["method"]["embodied_basis"].startswith("configured") for m in self.methods
        )

    @property
    def sci_undefined_reason(self) -> str | None:
        """Why there is no score (``None`` when there is one), as a sentence."""
        if self.sci_g_per_unit is not None:
            return None
        if self.app.startswith("_"):
            return f"{self.app} is the host's energy no application claims: it has no unit"
        if not self.unit:
            return (
                f"app {self.app} has no functional unit configured; add"
                f' `unit = "request"` to its [[apps]] rule'
            )
        return f"no {self.unit} was counted for app {self.app} in the period"

    def to_json(self) -> str:
        """Raw numbers; a null score comes with ``sci_undefined_reason``."""
        return json.dumps(
            asdict(self) | {"sci_undefined_reason": self.sci_undefined_reason}, indent=2
        )

    def to_markdown(self) -> str:
        """The report for people: SI prefixes with units, never scientific notation."""
        unit = self.unit or "(no functional unit configured)"
        score = (
            f"SCI = {humanize.grams(self.sci_g_per_unit)} CO2e per {unit}"
            if self.sci_g_per_unit is not None
            else f"SCI: not defined — {self.sci_undefined_reason}"
        )
        intensity = (
            f"{humanize.intensity(self.intensity_gco2_per_kwh)} (time-weighted)"
            if self.intensity_gco2_per_kwh is not None
            else "n/a"
        )
        lines = [
            f"# SCI report: {self.app}",
            "",
            f"**{score}**",
            "",
            f"- Period: {self.period_start} → {self.period_end} (the app's first and last data)",
            f"- Intervals: {self._intervals_text()}",
            f"- Hosts: {', '.join(self.hosts)}",
            f"- Functional unit (R): {unit}; counted: {humanize.number(self.units)}",
            f"- Energy (E): {humanize.kwh(self.energy_kwh)}",
            f"- Grid intensity (I): {intensity}",
            f"- Operational carbon (E × I): {humanize.grams(self.operational_g)} CO2e",
            f"- Embodied carbon (M): {humanize.grams(self.embodied_g)} CO2e",
            f"- Total carbon: {humanize.grams(self.carbon_g)} CO2e",
            *remote_markdown(self.remote, self.units, self.unit),
            "",
            "## Software boundary",
            "",
            f"- Measured: {', '.join(self.measured) or 'none'}",
            f"- Modelled: {', '.join(self.modelled) or 'none'}",
            f"- Left out: {'; '.join(self.left_out)}",
            "",
            "## Carbon intensity sources",
            "",
        ]
        for s in self.intensity_sources:
            whose = s.get("value_zone", s["zone"])
            lines.append(
                f"- {s['zone']}: {s['provider']} ({s['signal']} signal), {s['intervals']} "
                f"intervals, {s['fallback_intervals']} of them fallback values"
                + (f"; the values of {whose}, its parent zone" if whose != s["zone"] else "")
            )
        lines += ["", "## Methodology", ""]
        lines += [f"- {k}: {v}" for k, v in self.methodology.items()]
        lines += self._methods_markdown()
        lines += [
            "",
            "SCI = (E × I + M) per R, ISO/IEC 21031:2024. Window scores are the sum of "
            "carbon over the sum of units.",
        ]
        return "\n".join(lines) + "\n"

    def _intervals_text(self) -> str:
        """The app's interval count beside the grid's, each labelled."""
        ran = f"{self.app} ran in {self.intervals} of them"
        grid = sum(int(s["intervals"]) for s in self.intensity_sources)
        if len(self.hosts) > 1 or self.intervals > grid:  # rows of several hosts add up
            ran = (
                f"{self.app} has {self.intervals} interval rows, summed over"
                f" {len(self.hosts)} host{'s' if len(self.hosts) != 1 else ''}"
            )
        if not grid:
            return ran
        return (
            f"{grid} in the window asked for (every interval with a grid intensity,"
            f" whether the app ran or not); {ran}"
        )

    def _methods_markdown(self) -> list[str]:
        if not self.methods:
            return []
        changes = len(self.methods) - len({m["host"] for m in self.methods})
        lines = [
            "",
            "## Method in force (recorded with the data)",
            "",
            f"{len(self.methods)} method record(s), {changes} change(s) in the period;"
            " each applies from its time until the next one of its host.",
        ]
        for m in self.methods:
            lines += ["", f"### {m['host']} from {m['since']}", ""]
            lines += [f"- {k}: {v}" for k, v in describe(method_from_json(m["method"])).items()]
        if self.embodied_is_default:
            lines += ["", f"Embodied TE is a default estimate: {HOW_TO_SET}."]
        return lines


def build(
    config: Config, app: str, start: datetime, end: datetime, db_path: str | None = None
) -> SciReport:
    """Query the store for ``app`` between ``start`` and ``end``."""
    path = Path(db_path or config.store.path)
    if not path.exists():
        raise ReportError(f"no store at {path}: run `sci-agent run` first")
    try:
        with open_reader(path) as store:
            return _build(store, config, app, start, end)
    except StoreReadError as exc:
        raise ReportError(str(exc)) from None


def _build(
    store: StoreReader, config: Config, app: str, start: datetime, end: datetime
) -> SciReport:
    lo, hi = round(start.timestamp() * 1000), round(end.timestamp() * 1000)
    row = store.sci_totals(app, lo, hi)
    count = row[0]
    if not count:
        known = store.sci_apps()
        raise ReportError(
            f"no SCI data for app {app!r} in the period; apps in the store: "
            + (", ".join(known) or "none yet")
        )
    _, energy, operational, embodied, units, i_dt, dt, unit, first, last = row
    hosts = store.sci_hosts(app, lo, hi)
    methods = recorded_methods(store, hosts, lo, hi)
    return assemble(
        config,
        app,
        remote=remote_sums(store, app, lo, hi),
        methods=methods,
        unit=unit,
        first_ms=first,
        last_ms=last,
        hosts=hosts,
        intervals=count,
        energy_kwh=energy,
        operational_g=operational,
        embodied_g=embodied,
        units=units,
        intensity=i_dt / dt if dt else None,
        components=store.components(lo, hi),
        intensity_sources=store.intensity_sources(lo, hi),
    )


def assemble(
    config: Config,
    app: str,
    *,
    unit: str | None,
    first_ms: float,
    last_ms: float,
    hosts: list[str],
    intervals: int,
    energy_kwh: float,
    operational_g: float,
    embodied_g: float,
    units: float,
    intensity: float | None,
    components: Iterable[tuple[str, str]],
    intensity_sources: list[dict[str, Any]],
    methods: list[dict[str, Any]] | None = None,
    remote: dict[str, Any] | None = None,
) -> SciReport:
    """A report from a window's sums, whichever database summed them.

    The score is Σ carbon / Σ units; ``components`` are the (component, source) pairs
    seen in the window, which make the software boundary. ``methods`` are the recorded
    methods in force (the store's); ``None`` means the database keeps none (InfluxDB).
    ``intervals`` counts the intervals the app ran in (the grid's counts, in
    ``intensity_sources``, are of every interval in the window).
    """
    measured: list[str] = []
    modelled: list[str] = []
    for component, source in sorted(set(components)):
        (modelled if source == "model" else measured).append(f"{component} ({source})")
    left_out = list(LEFT_OUT)
    if not any(c.startswith("gpu") for c in measured + modelled):
        left_out.insert(0, "GPUs (none found on the host)")
    remote = remote or {}
    carbon = operational_g + embodied_g + float(remote.get("carbon_g", 0.0))
    return SciReport(
        remote=remote,
        app=app,
        unit=unit,
        period_start=iso_ms(first_ms),
        period_end=iso_ms(last_ms),
        hosts=hosts,
        intervals=intervals,
        sci_g_per_unit=carbon / units if units > 0 and unit else None,  # no unit, no score
        carbon_g=carbon,
        energy_kwh=energy_kwh,
        intensity_gco2_per_kwh=intensity,
        operational_g=operational_g,
        embodied_g=embodied_g,
        units=units,
        measured=measured,
        modelled=modelled,
        left_out=left_out,
        intensity_sources=[_with_value_zone(s) for s in intensity_sources],
        methodology=methodology(config, methods),
        methods=methods or [],
    )


def remote_sums(store: StoreReader, app: str, lo: int, hi: int) -> dict[str, Any]:
    """The app's remote AI calls over ``(lo, hi]`` from the store; {} when it made none."""
    row = store.remote_totals(app, lo, hi, REMOTE_SUMS)
    if row is None:
        return {}
    return remote_summary(row[1:], store.remote_models(app, lo, hi))


def remote_summary(sums: Sequence[Any], models: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """The report's ``remote`` from the sums of ``REMOTE_SUMS`` and, per (provider,
    model), (provider, model, method, mix zone, mix g/kWh, Σ calls, Σ unestimated, error)."""
    out: dict[str, Any] = {c: float(v or 0.0) for c, v in zip(REMOTE_SUMS, sums, strict=True)}
    out["models"] = [
        {"provider": p, "model": m, "method": meth, "mix_zone": zone, "mix_gco2_per_kwh": mix,
         "calls": n, "unestimated_calls": u, "error": err}
        for p, m, meth, zone, mix, n, u, err in models
    ]  # fmt: skip
    out["carbon_g"] = out["usage_g"] + out["embodied_g"]
    return out


def remote_markdown(remote: dict[str, Any], units: float, unit: str | None) -> list[str]:
    """The report's lines on remote AI calls: local vs remote, the range, per unit."""
    if not remote:
        return []
    calls = remote["calls"]
    per = f" per {unit}" if unit and units > 0 else ""
    scale = 1 / units if per else 1.0
    lines = [
        "",
        "## Remote AI calls (estimated, not measured)",
        "",
        f"- Remote carbon: {humanize.grams(remote['carbon_g'])} CO2e (usage E × I"
        f" {humanize.grams(remote['usage_g'])}, embodied M {humanize.grams(remote['embodied_g'])})"
        " — included in the total and the SCI above; local figures exclude it",
        f"- Remote energy: {humanize.kwh(remote['energy_kwh'])} (range"
        f" {humanize.kwh(remote['energy_kwh_min'])} to {humanize.kwh(remote['energy_kwh_max'])});"
        " never part of the host's energy E",
        f"- Calls: {humanize.number(calls)}, of which cache hits"
        f" {humanize.number(remote['cached_calls'])}"
        f" ({humanize.number(100 * remote['cached_calls'] / calls if calls else 0.0)} %,"
        " no remote energy)",
    ]
    if per:
        lines.append(
            f"- Per {unit}: {humanize.number(calls * scale)} calls,"
            f" {humanize.number(remote['cached_calls'] * scale)} cache hits,"
            f" {humanize.number(remote['input_tokens'] * scale)} input and"
            f" {humanize.number(remote['output_tokens'] * scale)} output tokens,"
            f" {humanize.grams(remote['carbon_g'] * scale)} CO2e remote"
        )
    if remote["unestimated_calls"]:
        lines.append(
            f"- Unestimated: {humanize.number(remote['unestimated_calls'])} calls the estimator"
            " cannot price (not counted as zero: the remote carbon above leaves them out)"
        )
    for m in remote.get("models", []):
        how = (
            f"{m['method']}, mix {m['mix_zone']} {humanize.intensity(m['mix_gco2_per_kwh'])}"
            if not m["unestimated_calls"]
            else f"unestimated: {m['error']}"
        )
        name = f"{m['provider']}/{m['model']}"
        lines.append(f"  - {name}: {humanize.number(m['calls'])} calls; {how}")
    return lines


def _with_value_zone(source: dict[str, Any]) -> dict[str, Any]:
    """``source`` with ``value_zone``: whose values they were (``FR`` for ``FR-COR``)."""
    return {**source, "value_zone": stored_value_zone(source["zone"], source["provider"])}


def recorded_methods(
    store: StoreReader, hosts: Iterable[str], lo: int, hi: int
) -> list[dict[str, Any]]:
    """The methods in force over ``(lo, hi]`` per host: the one in force at ``lo`` and every
    change after it, oldest first (none when the store predates the method table)."""
    out: list[dict[str, Any]] = []
    for host in hosts:
        rows = store.methods(host, hi)
        before = [r for r in rows if r[0] <= lo][-1:]
        for ts_ms, method in before + [r for r in rows if r[0] > lo]:
            out.append({"host": host, "since": iso_ms(ts_ms), "method": method})
    return out


_POLICY_TEXT = {
    "capacity": "static energy and embodied carbon shared by each app's share of the "
    "machine's capacity (CPU-s, memory, GPU); what no app used stays with _idle",
    "full": "static and unattributed energy and embodied carbon all handed to apps, "
    "in proportion to what apps used",
    "separate": "apps carry only their dynamic energy; static energy and embodied carbon "
    "reported as _idle",
}


def methodology(config: Config, methods: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """How the figures were made: what the spec asks a report to state.

    With recorded ``methods`` the parts that can change are listed per method record
    (``SciReport.methods``); without, they come from today's config, labelled so.
    """
    common: dict[str, Any] = {
        "energy attribution": "static (zero-load) energy apart; dynamic energy by CPU ticks, "
        "DRAM by RSS, GPU by per-process SM utilisation samples (see docs/architecture.md)",
    }
    if methods:
        return common | {"method": "recorded with the data: see 'Method in force' below"}
    where = (
        "not recorded with these data (the embedded store records it from this version on;"
        " InfluxDB does not)"
    )
    te = config.embodied.total_kgco2e
    policy = config.sci.idle_policy
    return common | {
        "method": f"{where}; the lines below are today's config",
        "idle policy": f"{policy}: " + _POLICY_TEXT.get(policy, _POLICY_TEXT["full"]),
        "PUE": config.sci.pue,
        "grid zone": config.grid.zone or config.grid.region or "default",
        "intensity providers (in order)": ", ".join(config.grid.providers),
        "embodied emissions (TE)": f"{humanize.number(te, 6)} kgCO2e (configured)"
        if te is not None
        else f"the default for the host's kind (see docs/sci-methodology.md); {HOW_TO_SET}",
        "expected lifespan (EL)": f"{humanize.number(config.embodied.lifespan_years)} years",
        "embodied share (RR/ToR)": "the app's share of the host's CPU capacity"
        if policy == "capacity"
        else "the app's share of the CPU time apps used"
        if policy in ("full", "proportional")
        else "none: all embodied carbon in _idle",
    }


def iso_ms(ms: float) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC, to the second."""
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
