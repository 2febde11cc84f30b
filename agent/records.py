"""Typed, immutable records handed between the pipeline's stages.

sensors → ``ComponentReading`` · procfs → ``ProcessActivity`` ·
attribution → ``IntervalResult`` (``ProcessEnergy``, ``AppEnergy``) · sinks.
Each sensor's last outcome is a ``SensorHealth``; the JSON form of an interval is
``agent.records_json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

ComponentKind = Literal["cpu", "dram", "gpu", "psys"]
Source = str  # the registered name of the sensor that measured it: rapl, nvml, model…

#: Pseudo-app names for the parts of the measured energy no application used.
IDLE_APP = "_idle"
UNATTRIBUTED_APP = "_unattributed"


@dataclass(frozen=True, slots=True)
class GpuUsage:
    """What a GPU's processes did during one interval, for attribution.

    ``sm_weight`` integrates per-process SM utilisation samples (percent × samples);
    ``memory_bytes`` is each running process's GPU memory, the fallback weight.
    """

    idle_joules: float
    sm_weight: Mapping[int, float] = field(default_factory=dict)
    memory_bytes: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ComponentReading:
    """Joules one component used during the last interval.

    ``static_joules`` is the part the component would have drawn at zero load over
    the interval (≤ ``joules``); the rest is dynamic, and only dynamic energy follows
    each process's work. ``static_source`` says where the floor came from (``model``,
    ``learned``, ``configured``, ``fallback`` while a counter's floor is still being
    learned (0 W, see ``agent.static_power``), or ``""`` when none is known). ``model`` names the
    power model and its coefficients for ``source="model"`` readings.
    """

    component: str  # cpu0, dram0, psys, gpu0, or cpu/dram for the model
    kind: ComponentKind
    source: Source
    joules: float
    gpu: GpuUsage | None = None
    static_joules: float = 0.0
    static_source: str = ""
    model: str | None = None
    package: int | None = None  # the CPU package (socket) a cpu/dram reading is on

    @property
    def dynamic_joules(self) -> float:
        """The energy above the zero-load floor (never negative)."""
        return max(0.0, self.joules - self.static_joules)


@dataclass(frozen=True, slots=True)
class CpuActivity:
    """CPU time the kernel accounted during one interval (from ``/proc/stat``)."""

    busy_ticks: int  # user + nice + system + irq + softirq, all CPUs
    total_ticks: int  # busy + idle + iowait + steal, all CPUs
    cpu_count: int
    package_busy: Mapping[int, float] = field(default_factory=dict)  # package → busy share
    ticks_per_s: int = 100  # the kernel's USER_HZ (sysconf SC_CLK_TCK)

    @property
    def busy_fraction(self) -> float:
        """Share of the interval the CPUs were busy, 0..1."""
        return self.busy_ticks / self.total_ticks if self.total_ticks > 0 else 0.0

    def busy_fraction_of(self, package: int | None) -> float:
        """Busy share of one package, or of the whole machine when unknown."""
        if package is not None and package in self.package_busy:
            return self.package_busy[package]
        return self.busy_fraction


@dataclass(frozen=True, slots=True)
class ProcessActivity:
    """One live process over one interval. Identity is ``(pid, starttime)``."""

    pid: int
    starttime: int  # clock ticks after boot, from /proc/PID/stat
    name: str
    app: str
    cpu_ticks: int  # utime + stime accrued during the interval, reaped_ticks included
    rss_bytes: int
    reaped_ticks: int = 0  # children's CPU time it reaped that no scan saw (cutime delta)
    ticks_per_s: int = 100  # the kernel's USER_HZ (sysconf SC_CLK_TCK)

    @property
    def cpu_s(self) -> float:
        """The CPU time of the interval in seconds."""
        return self.cpu_ticks / self.ticks_per_s


@dataclass(frozen=True, slots=True)
class ProcessEnergy:
    """Joules attributed to one process in one interval."""

    pid: int
    name: str
    app: str
    cpu_s: float
    cpu_joules: float
    dram_joules: float
    gpu_joules: float

    @property
    def joules(self) -> float:
        return self.cpu_joules + self.dram_joules + self.gpu_joules


@dataclass(frozen=True, slots=True)
class AppEnergy:
    """Joules of one application (or the ``_idle``/``_unattributed`` pseudo-apps).

    ``cpu_joules``, ``dram_joules`` and ``gpu_joules`` are the app's own (dynamic)
    energy from attribution. The capacity it used (``cpu_share`` of the CPU-seconds
    available, ``dram_share`` of the installed memory, ``gpu_share`` of the GPUs, each
    0..1) is filled by attribution; ``static_joules``, the static energy the share
    policy hands the app (under ``full`` also its share of the unattributed energy),
    by scoring.
    """

    app: str
    cpu_joules: float
    dram_joules: float
    gpu_joules: float
    cpu_s: float = 0.0
    rss_bytes: int = 0
    cpu_share: float = 0.0
    dram_share: float = 0.0
    gpu_share: float = 0.0
    static_joules: float = 0.0

    @property
    def joules(self) -> float:
        """The app's own (dynamic) energy, the sum over its processes."""
        return self.cpu_joules + self.dram_joules + self.gpu_joules

    @property
    def dynamic_joules(self) -> float:
        return self.joules

    @property
    def total_joules(self) -> float:
        """Dynamic energy plus the static share allocated by the share policy."""
        return self.joules + self.static_joules


Signal = Literal["average", "marginal"]


@dataclass(frozen=True, slots=True)
class IntensityValue:
    """A grid carbon intensity I, with where it came from.

    ``fallback`` is true when it did not come from the first provider of the chain
    (or is a stale cached value, or another zone's value), so reports can flag it.
    ``value_zone`` names the zone whose value it is when that is not ``zone`` (``FR``
    for a ``FR-COR`` the data does not hold); None when it is ``zone``'s own.
    """

    zone: str
    gco2_per_kwh: float
    provider: str
    signal: Signal
    time: datetime
    fallback: bool = False
    value_zone: str | None = None

    @property
    def of_zone(self) -> str:
        """The zone whose value this is: ``value_zone``, else ``zone``."""
        return self.value_zone or self.zone


@dataclass(frozen=True, slots=True)
class RemoteInference:
    """One app's remote AI calls in one interval, per (provider, model): an estimate.

    ``source`` is always ``"estimate"`` and ``method`` names the estimator (EcoLogits
    and its version). The energy is the calls' in someone else's data centre, never
    the host's: ``usage_g`` = ``energy_kwh`` × ``mix_gco2_per_kwh`` (the provider
    region's mix the estimator assumes), ``embodied_g`` the servers' embodied share.
    ``energy_kwh_min``/``_max`` is the estimate's range, ``energy_kwh`` its middle.
    Cache hits cost no remote energy; ``unestimated_calls`` are calls the estimator
    cannot price (an unknown model): counted, never a silent zero.
    """

    app: str
    provider: str
    model: str
    calls: float
    cached_calls: float
    input_tokens: float
    output_tokens: float
    unestimated_calls: float
    energy_kwh: float
    energy_kwh_min: float
    energy_kwh_max: float
    usage_g: float
    embodied_g: float
    mix_zone: str = ""
    mix_gco2_per_kwh: float = 0.0
    method: str = ""
    source: str = "estimate"
    error: str = ""

    @property
    def carbon_g(self) -> float:
        """Usage (E × I with the provider's mix) plus embodied (M)."""
        return self.usage_g + self.embodied_g


@dataclass(frozen=True, slots=True)
class SciRecord:
    """One application's SCI terms for one interval: SCI = (E × I + M) per R."""

    app: str
    unit: str | None  # the functional unit; None when the app has none configured
    units: float  # R
    energy_kwh: float  # E: attributed energy + idle share, × PUE
    intensity_gco2_per_kwh: float  # I
    operational_g: float  # E × I
    embodied_g: float  # M
    sci: float | None  # grams per unit; None when no units were counted
    #: the app's remote AI calls (``remote_inference``, estimated, never host energy):
    #: kept apart from E, operational and embodied above, included in ``sci``
    remote_g: float = 0.0
    remote_energy_kwh: float = 0.0

    @property
    def carbon_g(self) -> float:
        """Local (E × I + M) plus the remote calls' carbon."""
        return self.operational_g + self.embodied_g + self.remote_g


@dataclass(frozen=True, slots=True)
class Method:
    """What was in force when an interval was measured, recorded with its data.

    Stored only when it changes, so a report over a period can say which power
    model, static floors, embodied figure, share policy, PUE and grid source
    produced each part of it.
    """

    components: tuple[tuple[str, str, str], ...]  # (component, source, model or "")
    static_watts: tuple[tuple[str, float, str], ...]  # (component, watts, static_source)
    embodied_kgco2e: float  # TE charged to this host, after any VM scaling
    lifespan_years: float
    embodied_basis: str  # where TE comes from and how it was scaled
    share_policy: str
    pue: float
    zone: str
    providers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IntervalResult:
    """Everything one sampling cycle measured and attributed.

    Invariant: ``total_joules == idle_joules + unattributed_joules + Σ processes``,
    per component kind as well as in total.
    """

    host: str
    start: datetime
    end: datetime
    components: tuple[ComponentReading, ...]
    processes: tuple[ProcessEnergy, ...]
    apps: tuple[AppEnergy, ...]
    idle: AppEnergy
    unattributed: AppEnergy
    intensity: IntensityValue | None = None  # set by the scoring stage
    sci: tuple[SciRecord, ...] = ()
    method: Method | None = None  # how the numbers were computed, set after scoring
    clamped_ticks: int = 0  # reaped-children ticks beyond /proc/stat's busy ticks, not charged
    measured_s: float = 0.0  # the interval on the monotonic clock the sensors integrated over
    #: ``_idle`` and ``_unattributed`` as the share policy left them (set by scoring):
    #: the energy no app was allocated. None before scoring.
    overhead_left: tuple[AppEnergy, AppEnergy] | None = None
    #: the apps' remote AI calls this interval (set by scoring; see ``RemoteInference``)
    remote: tuple[RemoteInference, ...] = ()

    @property
    def interval_s(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def total_joules(self) -> float:
        return sum(c.joules for c in self.components)

    @property
    def idle_joules(self) -> float:
        return self.idle.joules

    @property
    def unattributed_joules(self) -> float:
        return self.unattributed.joules

    def energy_rows(self) -> tuple[AppEnergy, ...]:
        """The ``app_energy`` rows: apps, then ``_idle`` and ``_unattributed``.

        After scoring the pseudo-apps hold only what the share policy left them, so the
        rows' ``total_joules`` add up to ``total_joules`` under every policy.
        """
        left = self.overhead_left or (self.idle, self.unattributed)
        return (*self.apps, *left)


@dataclass(slots=True)
class SensorHealth:
    """A sensor's last outcome, updated in place by each read; shown by ``doctor``,
    the log, ``/metrics`` and the alerts' staleness check."""

    name: str
    ok: bool = False
    reason: str = ""
    fix: str = ""
    last_success: float | None = None  # unix time of the last good read
    last_duration_s: float = 0.0
    errors: int = 0


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
