"""Measure a block of Python, or one function, with the agent's own pipeline.

``with Tracker(app="finetune") as t: train()`` then ``t.energy_kwh``, ``t.carbon_g``,
``t.sci(units)``. The tracker charges this process and its children (anything it
starts, and descendants that detach but keep the inherited ``SCI_AGENT_JOB`` marker)
and nothing else on the host: the same sensors (RAPL, NVML, or the power model),
attribution, static share and scoring as the daemon, through ``agent.jobs.JobMeter``.

What is counted, exactly: every CPU-second this process and its tree use between the
tracker's first and last sample, including the tracker's own sampling thread (the
process is both the job and the sampler; ``overhead_cpu_s`` says how much of it was
sampling, a fraction of a percent at the default interval). Steps and phases mark
the run: each mark takes a sample, so a step's figures are exact at its edges.

The agent is imported when a tracker is built, never by ``import sci``.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from agent.config import Config
    from agent.jobs.meter import JobMeter, JobResult, JobTotals

P = ParamSpec("P")
R = TypeVar("R")

_KINDS = ("cpu", "dram", "gpu")
#: Seconds between samples while a run goes on (the daemon's default too): a sample
#: costs a few ms of CPU, so 5 s keeps the tracker well under 1 % of the work it tracks;
#: step marks and the end of a run take a sample of their own, so they stay exact.
DEFAULT_INTERVAL_S = 5.0


@dataclass(frozen=True)
class Figures:
    """Energy, carbon and CPU over a span of the run (a step, the rest, or all of it)."""

    duration_s: float
    cpu_s: float
    energy_joules: float  # at the machine: own (cpu, dram, gpu) + static share
    energy_kwh: float  # as scored: energy_joules × PUE, in kWh
    operational_g: float
    embodied_g: float

    @property
    def carbon_g(self) -> float:
        return self.operational_g + self.embodied_g


@dataclass(frozen=True)
class Step:
    """One marked step or phase: its figures since the previous mark, and its units."""

    index: int
    name: str
    figures: Figures
    units: float | None = None

    @property
    def duration_s(self) -> float:
        return self.figures.duration_s

    @property
    def cpu_s(self) -> float:
        return self.figures.cpu_s

    @property
    def energy_joules(self) -> float:
        return self.figures.energy_joules

    @property
    def energy_kwh(self) -> float:
        return self.figures.energy_kwh

    @property
    def operational_g(self) -> float:
        return self.figures.operational_g

    @property
    def embodied_g(self) -> float:
        return self.figures.embodied_g

    @property
    def carbon_g(self) -> float:
        return self.figures.carbon_g

    def sci(self) -> float | None:
        """Grams of CO2e per unit over this step; None without units."""
        return _per_unit(self.figures.carbon_g, self.units)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            **_figures_dict(self.figures),
            "units": self.units,
            "sci": self.sci(),
        }


class Tracker:
    """Measures this process and its children; a context manager and a decorator.

    ``config`` is a ``Config``, a path to a TOML file, or None for
    ``$SCI_AGENT_CONFIG`` (else the defaults, keeping learned state in the user's cache
    directory). ``units``/``unit``: the functional units of the whole run (else the
    sum of the steps' units). ``on_step`` is called with each ``Step`` as it is marked.
    """

    def __init__(
        self,
        app: str = "tracked",
        *,
        units: float | None = None,
        unit: str | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        config: Config | str | os.PathLike[str] | None = None,
        on_step: Callable[[Step], None] | None = None,
    ) -> None:
        if not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"interval_s: must be a positive number of seconds, not {interval_s}")
        if units is not None and not (units >= 0 and math.isfinite(units)):
            raise ValueError(f"units: must be a finite number ≥ 0, not {units}")
        self.app = app
        self.units = units
        self.unit = unit
        self.interval_s = interval_s
        self.on_step = on_step
        self._config_arg = config
        self._meter: JobMeter | None = None
        self._result: JobResult | None = None
        self._latest: JobTotals | None = None
        self._mark: JobTotals | None = None  # the totals at the previous mark
        self._steps: list[Step] = []
        self._sampler_cpu_s = 0.0  # the meter thread's CPU time, as it last read it
        self._marks_cpu_s = 0.0  # CPU spent sampling at marks and at the end
        self._marker_set = False

    # -- running -------------------------------------------------------------------

    def start(self) -> Tracker:
        """Open the sensors, take the baseline and start sampling (``__enter__``)."""
        if self.running:
            raise RuntimeError("this Tracker is already running")
        from agent.jobs.membership import MARKER
        from agent.jobs.meter import JobMeter, JobTotals

        self._result = None
        self._steps = []
        self._sampler_cpu_s = self._marks_cpu_s = 0.0
        meter = JobMeter(
            _resolve_config(self._config_arg),
            self.app,
            roots=(os.getpid(),),
            interval_s=self.interval_s,
            on_interval=self._on_interval,
        )
        self._latest = self._mark = JobTotals()
        try:
            meter.start()
        except BaseException:
            meter.agent.stop()  # whatever opened before the failure
            raise
        # Children inherit the marker, so a descendant that detaches is still found.
        self._marker_set = MARKER not in os.environ
        if self._marker_set:
            os.environ[MARKER] = meter.job_id
        self._meter = meter
        return self

    def stop(self) -> JobResult:
        """Take the last sample, stop sampling and close the sensors (``__exit__``)."""
        meter = self._meter
        if meter is None:
            raise RuntimeError("this Tracker is not running")
        from agent.jobs.membership import MARKER

        before = time.thread_time()
        try:
            result = meter.finish()
        finally:
            self._marks_cpu_s += time.thread_time() - before
            if self._marker_set and os.environ.get(MARKER) == meter.job_id:
                del os.environ[MARKER]
            self._marker_set = False
            self._meter = None
        self._result = result
        self._latest = result.totals
        return result

    @property
    def running(self) -> bool:
        return self._meter is not None

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn``: each call is measured (the wrapper's ``tracker`` is this one).

        A call made while the tracker already runs (recursion, or inside a ``with``
        block of the same tracker) is part of that run, not a new one.
        """

        @functools.wraps(fn)
        def measured(*args: P.args, **kwargs: P.kwargs) -> R:
            if self.running:
                return fn(*args, **kwargs)
            with self:
                return fn(*args, **kwargs)

        measured.tracker = self  # type: ignore[attr-defined]
        return measured

    def _on_interval(self, totals: JobTotals) -> None:
        """Called after every sample; on the meter's thread it also reads that thread's CPU."""
        self._latest = totals
        meter = self._meter
        if meter is not None and threading.current_thread() is meter._thread:
            self._sampler_cpu_s = time.thread_time()

    # -- steps -----------------------------------------------------------------------

    def step(self, name: str | None = None, units: float | None = None) -> Step:
        """Close a step here: the figures since the previous mark (or the start)."""
        totals = self._sample_now()
        previous = self._mark
        assert previous is not None
        self._mark = totals
        index = len(self._steps)
        if units is not None and not (units >= 0 and math.isfinite(units)):
            raise ValueError(f"units: must be a finite number ≥ 0, not {units}")
        step = Step(index, name or f"step-{index + 1}", _difference(totals, previous), units)
        self._steps.append(step)
        if self.on_step is not None:
            self.on_step(step)
        return step

    @contextmanager
    def phase(self, name: str, units: float | None = None) -> Iterator[None]:
        """A step covering exactly the ``with`` block (what came before it is not in it)."""
        self._mark = self._sample_now()
        try:
            yield
        finally:  # a block that raised still gets its step
            if self.running:
                self.step(name, units)

    def _sample_now(self) -> JobTotals:
        meter = self._meter
        if meter is None:
            raise RuntimeError("steps are marked while the Tracker runs")
        before = time.thread_time()
        totals = meter.sample()
        self._marks_cpu_s += time.thread_time() - before
        return totals if totals is not None else self._totals()

    @property
    def steps(self) -> list[Step]:
        return list(self._steps)

    @property
    def unmarked(self) -> Figures:
        """What no step covers: the whole run less the steps (before, between, after)."""
        whole = self._figures()
        parts = [s.figures for s in self._steps]
        return Figures(
            *(
                getattr(whole, f) - sum(getattr(p, f) for p in parts)
                for f in Figures.__dataclass_fields__
            )
        )

    # -- figures ---------------------------------------------------------------------

    def _totals(self) -> JobTotals:
        if self._latest is None:
            raise RuntimeError("this Tracker has not started")
        return self._latest

    def _figures(self) -> Figures:
        from agent.jobs.meter import JobTotals

        return _difference(self._totals(), JobTotals())

    @property
    def result(self) -> JobResult | None:
        """The meter's ``JobResult`` once stopped (None while running)."""
        return self._result

    @property
    def duration_s(self) -> float:
        """Seconds measured (as of the last sample while running)."""
        return self._totals().measured_s

    @property
    def cpu_s(self) -> float:
        return self._totals().cpu_s

    @property
    def energy_joules(self) -> float:
        """Joules at the machine: own CPU, DRAM and GPU energy plus the static share."""
        return self._totals().energy_joules

    @property
    def energy_kwh(self) -> float:
        """Energy as scored: ``energy_joules`` × PUE, in kWh (the E of SCI)."""
        return self._totals().energy_kwh

    @property
    def operational_g(self) -> float:
        return self._totals().operational_g

    @property
    def embodied_g(self) -> float:
        return self._totals().embodied_g

    @property
    def carbon_g(self) -> float:
        return self._totals().carbon_g

    @property
    def overhead_cpu_s(self) -> float:
        """CPU seconds the tracker spent sampling after its baseline (inside ``cpu_s``)."""
        return self._sampler_cpu_s + self._marks_cpu_s

    @property
    def recorded_units(self) -> float | None:
        """The units given, else the steps' units summed, else None."""
        if self.units is not None:
            return self.units
        given = [s.units for s in self._steps if s.units is not None]
        return sum(given) if given else None

    def sci(self, units: float | None = None) -> float | None:
        """Grams of CO2e per unit (``units`` or the recorded units); None without units."""
        return _per_unit(self.carbon_g, units if units is not None else self.recorded_units)

    def to_dict(self) -> dict[str, Any]:
        """Everything measured, JSON-ready."""
        totals = self._totals()
        result = self._result
        units = self.recorded_units
        out: dict[str, Any] = {
            "app": self.app,
            "running": self.running,
            **_figures_dict(self._figures()),
            "joules_by_kind": {
                **{k: totals.joules.get(k, 0.0) for k in _KINDS},
                "static": totals.static_joules,
            },
            "overhead_cpu_s": self.overhead_cpu_s,
            "units": units,
            "unit": self.unit,
            "sci": self.sci(),
            "steps": [s.to_dict() for s in self._steps],
        }
        if result is not None:
            out.update(
                job_id=result.job_id,
                host=result.host,
                start=result.start.isoformat(),
                end=result.end.isoformat(),
                components=[
                    {"component": c, "source": s, "model": m} for c, s, m in result.components
                ],
                intensity=_intensity_dict(result),
            )
        return out

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped" if self._result else "not started"
        return f"Tracker(app={self.app!r}, {state})"


def _per_unit(grams: float, units: float | None) -> float | None:
    if units is None or not units > 0 or not math.isfinite(units):
        return None
    return grams / units


def _difference(now: JobTotals, then: JobTotals) -> Figures:
    return Figures(
        duration_s=now.measured_s - then.measured_s,
        cpu_s=now.cpu_s - then.cpu_s,
        energy_joules=now.energy_joules - then.energy_joules,
        energy_kwh=now.energy_kwh - then.energy_kwh,
        operational_g=now.operational_g - then.operational_g,
        embodied_g=now.embodied_g - then.embodied_g,
    )


def _figures_dict(f: Figures) -> dict[str, float]:
    return {
        "duration_s": f.duration_s,
        "cpu_s": f.cpu_s,
        "energy_joules": f.energy_joules,
        "energy_kwh": f.energy_kwh,
        "operational_g": f.operational_g,
        "embodied_g": f.embodied_g,
        "carbon_g": f.carbon_g,
    }


def _intensity_dict(result: JobResult) -> dict[str, Any] | None:
    i = result.intensity
    if i is None:
        return None
    return {"gco2_per_kwh": i.gco2_per_kwh, "zone": i.zone, "provider": i.provider}


def _resolve_config(config: Config | str | os.PathLike[str] | None) -> Config:
    """``config`` as a ``Config``: given, loaded from a path, ``$SCI_AGENT_CONFIG``, defaults.

    With no file at all, learned static floors go to the user's cache directory
    rather than ``var/state`` under whatever directory the program runs in.
    """
    from agent import config as config_mod

    if isinstance(config, config_mod.Config):
        return config
    if config is None and not os.environ.get(config_mod.ENV_CONFIG):
        defaults = config_mod.Config()
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        sensors = replace(defaults.sensors, state_dir=str(cache / "sci-agent" / "state"))
        return config_mod.validate(replace(defaults, sensors=sensors))
    return config_mod.load(config)


__all__ = ["Figures", "Step", "Tracker"]
