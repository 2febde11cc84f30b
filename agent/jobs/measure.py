"""``sci-agent measure -- CMD``: run one command and measure its whole process tree.

The command runs with the job's environment marker (and in a transient systemd scope
where the host allows it); ``measure`` makes itself a child subreaper, samples with
``JobMeter`` (the daemon's own pipeline), forwards SIGINT/SIGTERM/SIGHUP, reaps the
job's adopted orphans, and prints the run (text, or ``--json``). The run is kept in the
store: its intervals (the job named as its app, so the dashboard and ``report`` show
it) and one ``runs`` row for ``compare``. When an agent already writes this host's
intervals to the same store, only the ``runs`` row is written (the intervals would be
counted twice).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.config import Config, ConfigError
from agent.jobs import launch
from agent.jobs.membership import marked_environment
from agent.jobs.meter import JobMeter, JobResult, JobTotals, become_subreaper
from agent.jobs.record import RunFacts, run_json, run_text
from exporters.sqlite_store import SqliteStore, StoreError

log = logging.getLogger("sci_agent.jobs")

EXIT_USAGE = 2
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
DEFAULT_INTERVAL_S = 1.0
#: How long adopted orphans are waited for after the command exits.
DEFAULT_GRACE_S = 5.0
PROGRESS_EVERY_S = 10.0
#: A store whose newest interval of this host is this recent has a writer running.
_AGENT_RECENT_S = 60.0
_AGENT_WINDOW_MS = 3_600_000  # intervals older than this before the run are not looked at
_APP_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")


def run_measured(
    cfg: Config,
    argv: list[str],
    *,
    app: str | None = None,
    as_json: bool = False,
    units: float | None = None,
    unit: str | None = None,
    interval_s: float | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    progress: bool | None = None,
    progress_every_s: float = PROGRESS_EVERY_S,
    grace_s: float = DEFAULT_GRACE_S,
    output: str | None = None,
) -> int:
    """Run ``argv`` measured; print the run; return its exit status (see the module).

    ``progress``: a line on ``err`` every ``progress_every_s`` (None: when ``err`` is a
    terminal). ``output``: write the result to this file instead of ``out``.
    """
    problem = _check(argv, app, units, unit, interval_s, grace_s)
    if problem:
        print(f"sci-agent measure: {problem}", file=err)
        return EXIT_USAGE
    request = Request(
        argv=tuple(argv),
        app=app or default_app(argv[0]),
        units=units,
        unit=unit or "unit",
        interval_s=interval_s or DEFAULT_INTERVAL_S,
        progress_every_s=progress_every_s if _want_progress(progress, err) else None,
        grace_s=grace_s,
    )
    subreaper = become_subreaper()
    if not subreaper:
        log.warning("cannot become a child subreaper: orphans of the job go to init")
    try:
        meter = JobMeter(
            cfg,
            request.app,
            interval_s=request.interval_s,
            on_interval=(
                Progress(err, request.progress_every_s) if request.progress_every_s else None
            ),
        )
    except ConfigError as exc:
        print(f"sci-agent measure: config error: {exc}", file=err)
        return EXIT_USAGE
    ran = _run(meter, request, subreaper, err)
    if isinstance(ran, int):
        return ran  # the command could not be started
    run = run_json(*ran)
    _store(cfg, ran[0], run, err)
    _print(run, as_json, out, output, err)
    return ran[1].exit_code


@dataclass(frozen=True)
class Request:
    """What to run and how (checked)."""

    argv: tuple[str, ...]
    app: str
    units: float | None
    unit: str
    interval_s: float
    progress_every_s: float | None  # None: no progress line
    grace_s: float


def _run(
    meter: JobMeter, request: Request, subreaper: bool, err: TextIO
) -> tuple[JobResult, RunFacts] | int:
    """Start the command in the job, wait for it and its orphans; the meter's result
    and the run's facts, or the exit status when the command could not be started."""
    scope = launch.systemd_scope(meter.job_id)
    if scope is not None:
        meter.namer.cgroup = scope.cgroup_glob
    meter.namer.add_adopter(os.getpid())
    forwarder = launch.Forwarder()
    meter.start()
    forwarder.install()
    try:
        try:
            proc = _start(meter, request.argv, scope)
        except OSError as exc:
            meter.finish()
            return _cannot_run(request.argv[0], exc, err)
        forwarder.pid = proc.pid
        if forwarder.received:  # a signal came while the command was being started
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, forwarder.received[-1])
        status = launch.wait_command(proc.pid)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        forwarder.pid = None
        seen = len(forwarder.received)
        left = launch.reap_orphans(request.grace_s, lambda: len(forwarder.received) > seen)
        result = meter.finish()
    finally:
        forwarder.restore()
    code = launch.exit_code(status)
    facts = RunFacts(
        command=request.argv,
        exit_code=code,
        signal=signal.Signals(code - 128).name if os.WIFSIGNALED(status) else None,
        units=request.units,
        unit=request.unit,
        tracking=_tracking(scope, subreaper),
        left_running=tuple(left),
    )
    return result, facts


def _start(
    meter: JobMeter, argv: tuple[str, ...], scope: launch.Scope | None
) -> subprocess.Popen[bytes]:
    """Start the command, in ``scope`` if any, as the job's root (no scan in between)."""
    if scope is not None and shutil.which(argv[0]) is None:
        raise FileNotFoundError(argv[0])  # systemd-run would say it in its own words
    with meter.paused():
        proc = launch.spawn(
            [*(scope.prefix if scope else ()), *argv], marked_environment(meter.job_id)
        )
        meter.add_root(proc.pid)
    return proc


def _tracking(scope: launch.Scope | None, subreaper: bool) -> str:
    """How the job's processes were followed, in words."""
    ways = ["ancestry", "environment marker"]
    if subreaper:
        ways.append("subreaper")
    if scope is not None:
        return f"systemd scope {scope.unit}, " + ", ".join(ways)
    return ", ".join(ways) + " (no cgroup of its own here)"


def _check(
    argv: list[str],
    app: str | None,
    units: float | None,
    unit: str | None,
    interval_s: float | None,
    grace_s: float,
) -> str | None:
    """Why the arguments cannot run, naming the option; None when they can."""
    if not argv or not argv[0]:
        return "no command given (usage: sci-agent measure [options] -- CMD ARGS...)"
    if units is not None and not (units > 0 and math.isfinite(units)):
        return f"--units: must be a number greater than 0, got {units}"
    if unit is not None and units is None:
        return "--unit: give --units N too (the number of units the run produced)"
    if interval_s is not None and not (interval_s > 0 and math.isfinite(interval_s)):
        return f"--interval: must be greater than 0, got {interval_s}"
    if not grace_s >= 0:
        return f"--grace: must be 0 or more, got {grace_s}"
    if app is not None and (not app or _APP_CHARS.search(app) or len(app) > 64):
        return f"--app: letters, digits and _ . : - only (at most 64), got {app!r}"
    return None


def default_app(command: str) -> str:
    """The app a command is measured as: its basename, made a valid app name."""
    name = _APP_CHARS.sub("_", os.path.basename(command))[:64]
    return name if name and name[0] not in ".:-" else f"job{name}"[:64]


def _want_progress(progress: bool | None, err: TextIO) -> bool:
    if progress is not None:
        return progress
    try:
        return err.isatty()
    except (AttributeError, ValueError):
        return False


def _cannot_run(command: str, exc: OSError, err: TextIO) -> int:
    """The shell's answer to a command that cannot be executed: 127 or 126."""
    if isinstance(exc, FileNotFoundError):
        print(f"sci-agent measure: {command}: command not found", file=err)
        return EXIT_NOT_FOUND
    print(f"sci-agent measure: {command}: cannot execute ({exc.strerror})", file=err)
    return EXIT_NOT_EXECUTABLE


class Progress:
    """Called after each interval: a line on ``err`` every ``every_s`` seconds."""

    def __init__(self, err: TextIO, every_s: float) -> None:
        self.err = err
        self.every_s = every_s
        self.started = time.monotonic()
        self.next_at = self.started + every_s

    def __call__(self, totals: JobTotals) -> None:
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + self.every_s
        line = (
            f"sci-agent measure: {_clock(now - self.started)} elapsed, "
            f"{totals.energy_joules:.1f} J so far, {totals.last_watts:.2f} W now"
        )
        with contextlib.suppress(OSError, ValueError):  # a closed stderr stops nothing
            print(line, file=self.err, flush=True)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _store(cfg: Config, result: JobResult, run: dict[str, Any], err: TextIO) -> None:
    """Keep the run: its intervals (unless an agent writes this host's) and its row."""
    run["stored_intervals"] = False
    if not cfg.store.enabled:
        return
    store = SqliteStore(
        cfg.store.path,
        cfg.store.retention_days,
        cfg.store.top_processes,
        max_process_names_per_day=cfg.max_process_names_per_day,
    )
    try:
        writer = agent_writing(store, cfg.host, result)
        if writer:
            run["note"] = f"{writer}: only the run is stored, not its intervals"
        else:
            run["stored_intervals"] = True
            store.write(result.intervals)
        store.write_run(run)
    except StoreError as exc:
        print(f"sci-agent measure: the run is not stored: {exc}", file=err)
    finally:
        store.close()


def agent_writing(store: SqliteStore, host: str, result: JobResult) -> str | None:
    """Why another writer (a running agent) is thought to store this host's intervals.

    The store holds an interval of this host, not written by a measured run, that ends
    after the run started (it wrote during the run) or shortly before (within 60 s, or
    three of its intervals, whichever is longer); None otherwise.
    """
    started_ms = round(result.start.timestamp() * 1000)
    last = store.others_last_interval(host, started_ms - _AGENT_WINDOW_MS)
    if last is None:
        return None
    end_ms, seconds = last
    if end_ms >= started_ms:
        return "an agent wrote this host's intervals during the run"
    if started_ms - end_ms <= max(_AGENT_RECENT_S, 3 * seconds) * 1000:
        gap = (started_ms - end_ms) / 1000
        return f"an agent wrote this host's last interval {gap:.0f} s before the run"
    return None


def _print(
    run: dict[str, Any], as_json: bool, out: TextIO, output: str | None, err: TextIO
) -> None:
    if output is not None:
        text = json.dumps(run, indent=2) if as_json else run_text(run)
        try:
            Path(output).write_text(text + "\n", encoding="utf-8")
            return
        except OSError as exc:
            print(f"sci-agent measure: cannot write {output}: {exc.strerror}", file=err)
    print(
        json.dumps(run, separators=(",", ":")) if as_json else run_text(run), file=out, flush=True
    )
