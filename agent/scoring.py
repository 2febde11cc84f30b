"""The scoring stage: each app's SCI = (E × I + M) per R for one interval.

- **E**: the app's own (dynamic) energy from attribution, plus the static energy the
  share policy hands it, times the PUE.
- **I**: the grid intensity of the interval, from the provider chain.
- **M**: the host's embodied emissions × interval / lifespan, shared like static energy.
- **R**: the functional units the app counted in the interval.

Share policies (``[sci] idle_policy``):

- ``capacity`` (default; the SCI specification's resource share = resources used ÷
  resources available): each app gets the static energy of each kind × its share of
  that kind's capacity (CPU: CPU-seconds ÷ interval × CPUs; DRAM: RSS ÷ installed
  memory; GPU: its share of the GPUs' per-process activity), and the embodied carbon
  × its CPU share. What no app used stays with ``_idle``; ``_unattributed`` keeps its
  own row. An app's SCI then moves only when the app (or the grid) changes.
- ``full`` (full allocation, for carbon accounting): everything is handed to apps,
  static and unattributed energy per kind by the apps' shares of what apps used of
  that kind, embodied carbon by their shares of the CPU time apps used; no ``_idle``
  or ``_unattributed`` row while any app ran. An app's SCI moves with its neighbours.
  ``proportional`` is a deprecated alias.
- ``separate``: apps carry only their dynamic energy; ``_idle`` all static energy and
  all embodied carbon, ``_unattributed`` its own row.

Under every policy the rows add up to the host: Σ operational = E_host × PUE × I and
Σ embodied = TE × interval / lifespan. An app that counted units but had no process in
the interval still gets a row (no energy, its units), so no accepted unit is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, get_args

from agent.records import (
    IDLE_APP,
    UNATTRIBUTED_APP,
    AppEnergy,
    IntensityValue,
    IntervalResult,
    RemoteInference,
    SciRecord,
)
from sci.formula import embodied_carbon, joules_to_kwh, operational_carbon, sci, years_to_seconds

log = logging.getLogger("sci_agent.scoring")

SharePolicy = Literal["capacity", "full", "separate"]
SHARE_POLICIES: tuple[SharePolicy, ...] = get_args(SharePolicy)
DEFAULT_POLICY: SharePolicy = "capacity"
_ALIASES: dict[str, SharePolicy] = {"proportional": "full"}
_KINDS = ("cpu", "dram", "gpu")


def share_policy(name: str) -> SharePolicy:
    """The policy ``name`` stands for; a deprecated alias is logged; unknown raises."""
    if name in _ALIASES:
        log.warning("sci.idle_policy = %r is deprecated: it is now called %r", name, _ALIASES[name])
        return _ALIASES[name]
    for policy in SHARE_POLICIES:
        if name == policy:
            return policy
    raise ValueError(f"sci.idle_policy: must be one of {', '.join(SHARE_POLICIES)}, got {name!r}")


@dataclass(frozen=True, slots=True)
class _Allocation:
    """What one policy hands each app, and what stays with the pseudo-apps."""

    static_joules: tuple[float, ...]  # per app, in result.apps order
    embodied_g: tuple[float, ...]
    idle_left: AppEnergy
    unattributed_left: AppEnergy
    embodied_left_g: float


class Scorer:
    """Turns attributed intervals into SCI rows per application."""

    def __init__(
        self,
        app_units: Mapping[str, str],
        embodied_kgco2e: float,
        lifespan_years: float,
        idle_policy: str = DEFAULT_POLICY,
        pue: float = 1.0,
        cpu_count: int = 1,
    ) -> None:
        """``cpu_count`` is accepted for compatibility: capacity shares come from attribution."""
        del cpu_count
        self.app_units = dict(app_units)
        self.embodied_g = embodied_kgco2e * 1000.0
        self.lifespan_s = years_to_seconds(lifespan_years)
        self.idle_policy = share_policy(idle_policy)
        self.pue = pue

    def score(
        self,
        result: IntervalResult,
        intensity: IntensityValue,
        units: Mapping[str, float],
        remote: Sequence[RemoteInference] = (),
    ) -> IntervalResult:
        """Return ``result`` with its intensity, the apps' static shares and SCI rows.

        ``remote`` (the apps' estimated AI calls) is added to each app's carbon and SCI
        apart from E, operational and embodied, so the host's rows still add up.
        """
        host_m = embodied_carbon(self.embodied_g, max(0.0, result.interval_s), self.lifespan_s)
        share = _allocate(self.idle_policy, result, host_m)
        given = zip(result.apps, share.static_joules, strict=True)
        apps = tuple(replace(a, static_joules=s) for a, s in given)
        rows = [
            self._row(a.app, a.total_joules, m, intensity, units)
            for a, m in zip(apps, share.embodied_g, strict=True)
        ]
        if self.idle_policy != "full" or not apps:
            rows.append(
                self._row(IDLE_APP, share.idle_left.joules, share.embodied_left_g, intensity, {})
            )
            rows.append(
                self._row(UNATTRIBUTED_APP, share.unattributed_left.joules, 0.0, intensity, {})
            )
        seen = {a.app for a in apps}
        remote_apps = {r.app for r in remote if r.calls > 0}
        for app in sorted(set(units) | remote_apps):
            if app not in seen and (units.get(app, 0) > 0 or app in remote_apps):
                rows.append(self._row(app, 0.0, 0.0, intensity, units))  # never drop them
        return replace(
            result,
            intensity=intensity,
            apps=apps,
            sci=tuple(with_remote(rows, remote)),
            overhead_left=(share.idle_left, share.unattributed_left),
            remote=tuple(remote),
        )

    def _row(
        self,
        app: str,
        joules: float,
        embodied_g: float,
        intensity: IntensityValue,
        units: Mapping[str, float],
    ) -> SciRecord:
        energy_kwh = joules_to_kwh(max(0.0, joules)) * self.pue
        count = float(units.get(app, 0.0))
        return SciRecord(
            app=app,
            unit=self.app_units.get(app),
            units=count,
            energy_kwh=energy_kwh,
            intensity_gco2_per_kwh=intensity.gco2_per_kwh,
            operational_g=operational_carbon(energy_kwh, intensity.gco2_per_kwh),
            embodied_g=max(0.0, embodied_g),
            sci=sci(energy_kwh, intensity.gco2_per_kwh, max(0.0, embodied_g), count),
        )


def with_remote(rows: Sequence[SciRecord], remote: Sequence[RemoteInference]) -> list[SciRecord]:
    """``rows`` with each app's remote calls in ``remote_g`` and its SCI.

    SCI = (E × I + M + remote carbon) / R: the calls the app's units made count in
    its score, while E, operational and embodied stay the host's own.
    """
    carbon: dict[str, float] = {}
    energy: dict[str, float] = {}
    for r in remote:
        carbon[r.app] = carbon.get(r.app, 0.0) + r.carbon_g
        energy[r.app] = energy.get(r.app, 0.0) + r.energy_kwh
    out = []
    for row in rows:
        extra = carbon.get(row.app, 0.0)
        if row.app in carbon:
            score = row.sci + extra / row.units if row.sci is not None and row.units > 0 else None
            row = replace(row, remote_g=extra, remote_energy_kwh=energy[row.app], sci=score)
        out.append(row)
    return out


def _allocate(policy: SharePolicy, result: IntervalResult, host_m: float) -> _Allocation:
    """Hand static energy and embodied carbon to apps under ``policy``."""
    apps = result.apps
    idle = _per_kind(result.idle)
    unattributed = _per_kind(result.unattributed)
    static = [0.0] * len(apps)
    if policy == "separate" or not apps:
        return _leftover(apps, static, [0.0] * len(apps), idle, unattributed, host_m)
    for kind in _KINDS:
        weights = _weights(apps, kind, normalise=policy == "full")
        pools = [idle] if policy == "capacity" else [idle, unattributed]
        for pool in pools:
            given = 0.0
            for i, w in enumerate(weights):
                part = pool[kind] * w
                static[i] += part
                given += part
            pool[kind] -= given
    m_weights = _weights(apps, "cpu", normalise=policy == "full")
    embodied = [host_m * w for w in m_weights]
    return _leftover(apps, static, embodied, idle, unattributed, host_m)


def _weights(apps: Sequence[AppEnergy], kind: str, normalise: bool) -> list[float]:
    """Each app's share of ``kind``: of the capacity, or (``normalise``) of what apps used.

    Normalised shares fall back to the apps' dynamic energy, then to equal parts, so
    that ``full`` hands everything out whenever an app ran.
    """
    shares = [getattr(a, f"{kind}_share") for a in apps]
    if not normalise:
        return shares
    for candidate in (shares, [a.joules for a in apps], [1.0] * len(apps)):
        total = sum(candidate)
        if total > 0:
            return [w / total for w in candidate]
    return shares  # pragma: no cover - the equal parts always have a total


def _leftover(
    apps: Sequence[AppEnergy],
    static: list[float],
    embodied: list[float],
    idle: dict[str, float],
    unattributed: dict[str, float],
    host_m: float,
) -> _Allocation:
    return _Allocation(
        static_joules=tuple(static),
        embodied_g=tuple(embodied),
        idle_left=_pseudo(IDLE_APP, idle),
        unattributed_left=_pseudo(UNATTRIBUTED_APP, unattributed),
        embodied_left_g=host_m - sum(embodied),
    )


def _per_kind(row: AppEnergy) -> dict[str, float]:
    return {"cpu": row.cpu_joules, "dram": row.dram_joules, "gpu": row.gpu_joules}


def _pseudo(name: str, parts: Mapping[str, float]) -> AppEnergy:
    """What is left of a pool; a rounding residue below zero is clamped to zero."""
    return AppEnergy(name, max(0.0, parts["cpu"]), max(0.0, parts["dram"]), max(0.0, parts["gpu"]))
