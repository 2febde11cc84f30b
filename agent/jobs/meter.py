"""Measure one job with the agent's pipeline: sensors, attribution, shares, scoring.

``JobMeter`` runs the daemon's cycle (``Agent.measure``) every ``interval_s`` on a
thread of its own, with a ``JobNamer`` so the job's processes form one app, and sums
that app's numbers over the intervals: CPU time, energy per component kind (its own
dynamic energy and its share of the static energy by the configured share policy),
operational and embodied carbon. The intervals themselves are kept, so the caller
can write them to the store.

The meter's own process is the agent (app ``sci-agent``) and is never charged to the
job, except for one thing: orphans of the job re-parented to it (it makes itself a
child subreaper on Linux, so a detached grandchild is re-parented to it rather than to
init) are reaped by it, and the CPU time the kernel then adds to its children's
counters is the job's. That part is moved from the agent's row to the job's.
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

from agent.config import Config
from agent.jobs.membership import JobNamer
from agent.procfs import ProcScanner
from agent.records import IntensityValue, IntervalResult, ProcessActivity, utc_now

log = logging.getLogger("sci_agent.jobs")

_PR_SET_CHILD_SUBREAPER = 36
REAPED = "(reaped by sci-agent)"


def become_subreaper() -> bool:
    """Make this process adopt its descendants' orphans (Linux ≥ 3.4); False elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class JobScanner(ProcScanner):
    """A scanner that hands the job the CPU its orphans used, reaped by this process."""

    def __init__(self, namer: JobNamer, root: str, sys_root: str) -> None:
        super().__init__(namer, root, sys_root)
        self.job_app = namer.app

    def scan(self) -> list[ProcessActivity]:
        out = []
        for p in super().scan():
            if p.pid == self.self_pid and p.reaped_ticks > 0 and p.app != self.job_app:
                out.append(replace(p, cpu_ticks=p.cpu_ticks - p.reaped_ticks, reaped_ticks=0))
                out.append(
                    ProcessActivity(0, 0, REAPED, self.job_app, p.reaped_ticks, 0, p.reaped_ticks)
                )
            else:
                out.append(p)
        return out


@dataclass
class JobTotals:
    """The job's sums so far (mutable: the meter adds each interval)."""

    intervals: int = 0
    measured_s: float = 0.0
    cpu_s: float = 0.0
    joules: dict[str, float] = field(default_factory=dict)  # cpu, dram, gpu: its own
    static_joules: float = 0.0  # its share of the static energy
    energy_kwh: float = 0.0  # E as scored: (own + static share) × PUE
    operational_g: float = 0.0
    embodied_g: float = 0.0
    last_watts: float = 0.0  # the job's power over the last interval

    @property
    def energy_joules(self) -> float:
        return sum(self.joules.values()) + self.static_joules

    @property
    def carbon_g(self) -> float:
        return self.operational_g + self.embodied_g


@dataclass(frozen=True)
class JobResult:
    """One measured job."""

    job_id: str
    app: str
    host: str
    start: datetime
    end: datetime
    totals: JobTotals
    intensity: IntensityValue | None  # the last interval's
    components: tuple[tuple[str, str, str], ...]  # (component, source, model or "")
    intervals: tuple[IntervalResult, ...]

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()

    def sci(self, units: float) -> float | None:
        """Grams of CO2e per unit over the whole job; None without units."""
        if not units > 0 or not math.isfinite(units):
            return None
        return self.totals.carbon_g / units


class JobMeter:
    """Samples every ``interval_s`` on its own thread; ``finish`` gives the result.

    ``on_interval`` (called on the meter's thread) sees the running totals after each
    interval, e.g. for a progress line.
    """

    def __init__(
        self,
        config: Config,
        app: str,
        *,
        job_id: str | None = None,
        roots: tuple[int, ...] = (),
        cgroup: str | None = None,
        interval_s: float = 1.0,
        on_interval: Callable[[JobTotals], None] | None = None,
    ) -> None:
        from agent.apps import AppNamer
        from agent.runtime import Agent

        self.job_id = job_id or uuid.uuid4().hex[:16]
        self.app = app
        self.interval_s = interval_s
        self.on_interval = on_interval
        self.namer = JobNamer(
            AppNamer(config.apps),
            app,
            job_id=self.job_id,
            roots=roots,
            cgroup=cgroup,
            proc_root=config.procfs.root,
        )
        self.agent = Agent(config, serve_http=False)
        self.agent.sampler.scanner.close()
        self.agent.sampler.scanner = JobScanner(
            self.namer, config.procfs.root, config.procfs.sys_root
        )
        self.totals = JobTotals()
        self.results: list[IntervalResult] = []
        self.start_time = utc_now()
        self._lock = threading.Lock()
        self._sampling = threading.Lock()  # one measurement at a time: the thread or a caller
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: str | None = None

    def start(self) -> None:
        """Open the sensors, take the baseline and start sampling."""
        self.agent.start()
        self.start_time = utc_now()
        self._thread = threading.Thread(target=self._run, name="job-meter", daemon=True)
        self._thread.start()

    def add_root(self, pid: int) -> None:
        self.namer.add_root(pid)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No interval is measured inside: start a root and ``add_root`` it here, so no
        scan sees the forked child before it is the job's (a name is kept for life)."""
        with self._sampling:
            yield

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval_s
            self.sample()

    def sample(self) -> JobTotals | None:
        """Measure the interval since the previous sample and add the job's part.

        Safe to call from any thread while the meter runs (a caller marking a step):
        samples are taken one at a time. Returns a copy of the totals just after this
        sample, or None when the interval failed (the next one covers its time).
        """
        with self._sampling:
            try:
                result = self.agent.measure()
            except Exception as exc:  # a failed interval: its time goes to the next one
                message = f"{type(exc).__name__}: {exc}"
                if self._error != message:
                    log.warning(
                        "measuring an interval failed (the next one covers it): %s", message
                    )
                self._error = message
                return None
            with self._lock:
                self._add(result)
                totals = replace(self.totals, joules=dict(self.totals.joules))
        if self.on_interval is not None:
            self.on_interval(totals)
        return totals

    def _add(self, result: IntervalResult) -> None:
        t = self.totals
        t.intervals += 1
        t.measured_s += result.interval_s
        self.results.append(result)
        app = next((a for a in result.apps if a.app == self.app), None)
        if app is not None:
            t.cpu_s += app.cpu_s
            for kind, joules in (
                ("cpu", app.cpu_joules),
                ("dram", app.dram_joules),
                ("gpu", app.gpu_joules),
            ):
                t.joules[kind] = t.joules.get(kind, 0.0) + joules
            t.static_joules += app.static_joules
            seconds = result.interval_s
            t.last_watts = app.total_joules / seconds if seconds > 0 else 0.0
        else:
            t.last_watts = 0.0
        row = next((s for s in result.sci if s.app == self.app), None)
        if row is not None:
            t.energy_kwh += row.energy_kwh
            t.operational_g += row.operational_g
            t.embodied_g += row.embodied_g

    def finish(self) -> JobResult:
        """Stop sampling, measure the last partial interval, close the sensors."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        self.agent.stop()
        last = self.results[-1] if self.results else None
        method = self.agent.method_of(last) if last is not None else None
        return JobResult(
            job_id=self.job_id,
            app=self.app,
            host=self.agent.config.host,
            start=self.start_time,
            end=last.end if last is not None else utc_now(),
            totals=self.totals,
            intensity=last.intensity if last is not None else None,
            components=method.components if method is not None else (),
            intervals=tuple(self.results),
        )
