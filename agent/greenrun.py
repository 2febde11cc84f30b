"""``sci-agent run-when-green``: wait for a greener grid (never past the deadline), then run.

The start is the earliest of: the start of the greenest window of ``--duration`` in the
forecast (``agent.grid.schedule``); the first check at which the intensity now is at or
below ``--max-intensity``; the deadline ``now + within - duration``, so a job of the
stated length is done within ``within``. With no forecast, it waits for the threshold
until the deadline; with neither a forecast nor a threshold it says so and starts now.

While waiting it says on stderr what it waits for and until when, and every
``check_every`` seconds fetches the intensity again (when a threshold is set).
SIGINT/SIGTERM while waiting end it without running the command (exit 130/143). The
command is then run and measured by ``agent.jobs.measure.run_measured``, as
``sci-agent measure`` runs it, and its exit status is returned.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import TextIO

from agent.config import Config, ConfigError
from agent.grid import build_chain
from agent.grid.chain import IntensityChain
from agent.grid.forecast import Forecast, chain_forecast
from agent.grid.schedule import FORECAST_TIMEOUT_S, Plan, plan_window, short_time, span
from agent.records import IntensityValue, utc_now

Runner = Callable[[list[str]], int]


@dataclass(frozen=True)
class Options:
    """What to wait for (see the module)."""

    within: timedelta
    duration: timedelta = timedelta(hours=1)
    max_intensity: float | None = None
    check_every_s: float = 300.0

    def check(self) -> None:
        """``ConfigError`` naming the option that makes no sense."""
        if self.duration > self.within:
            raise ConfigError(
                f"--duration ({span(self.duration)}) is longer than --within ({span(self.within)})"
            )
        if self.max_intensity is not None and not self.max_intensity >= 0:
            raise ConfigError(f"--max-intensity: expected gCO2e/kWh >= 0, got {self.max_intensity}")
        if not self.check_every_s > 0:
            raise ConfigError(f"--check-every: expected seconds > 0, got {self.check_every_s}")


@dataclass(frozen=True)
class Decision:
    """When to start, why, and the deadline it never passes."""

    start_at: datetime
    deadline: datetime
    reason: str
    plan: Plan | None = None


class Interrupted(Exception):
    """A signal arrived while waiting."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def decide(now: datetime, current: IntensityValue, fc: Forecast, opts: Options) -> Decision:
    """The planned start from the value now and the forecast (see the module)."""
    deadline = now + opts.within - opts.duration
    limit = opts.max_intensity
    if limit is not None and current.gco2_per_kwh <= limit:
        now_g = current.gco2_per_kwh
        reason = f"the intensity now, {now_g:.0f} gCO2e/kWh, is at or below {limit:g}"
        return Decision(now, deadline, reason)
    plan = plan_window(now, current, fc.values, opts.duration, opts.within) if fc.values else None
    threshold = f"the intensity at or below {limit:g} gCO2e/kWh" if limit is not None else None
    if isinstance(plan, Plan):
        best = plan.best
        reason = (
            f"the greenest {span(opts.duration)} window ({best.mean_gco2_per_kwh:.0f} gCO2e/kWh "
            f"on average, {plan.savings_pct:.1f} % below starting now)"
        )
        if threshold:
            reason += f", or {threshold}, whichever comes first"
        return Decision(min(best.start, deadline), deadline, reason, plan)
    why = fc.note if not fc.values else plan
    if threshold:
        reason = f"{threshold} (no forecast: {why}), at most until the deadline"
        return Decision(deadline, deadline, reason)
    return Decision(now, deadline, f"no forecast ({why}) and no --max-intensity to wait for")


def wait_for_start(
    chain: IntensityChain,
    opts: Options,
    *,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    err: TextIO = sys.stderr,
) -> Decision:
    """Decide, then wait until the start; returns the decision acted on."""
    chain.refresh(force=True)
    current = chain.current()
    fc = chain_forecast(chain, FORECAST_TIMEOUT_S)
    now = clock()
    decision = decide(now, current, fc, opts)
    if decision.start_at <= now:
        _say(err, f"starting now: {decision.reason}")
        return decision
    _say(
        err,
        f"waiting until {short_time(decision.start_at)} (in {span(decision.start_at - now)}) for "
        f"{decision.reason}; the intensity now is {current.gco2_per_kwh:.0f} gCO2e/kWh "
        f"({current.provider}); deadline {short_time(decision.deadline)}",
    )
    while (now := clock()) < decision.start_at:
        sleep(min(opts.check_every_s, (decision.start_at - now).total_seconds()))
        if opts.max_intensity is None or clock() >= decision.start_at:
            continue
        chain.refresh(force=True)
        value = chain.current()
        if value.gco2_per_kwh <= opts.max_intensity:
            reason = (
                f"the intensity now, {value.gco2_per_kwh:.0f} gCO2e/kWh ({value.provider}), is at "
                f"or below {opts.max_intensity:g}"
            )
            _say(err, f"starting now: {reason}")
            return Decision(clock(), decision.deadline, reason, decision.plan)
        _say(
            err,
            f"the intensity now is {value.gco2_per_kwh:.0f} gCO2e/kWh, above "
            f"{opts.max_intensity:g}: still waiting until {short_time(decision.start_at)}",
        )
    _say(err, f"starting now: {'the deadline' if decision.plan is None else 'the window'} is here")
    return decision


def run_when_green(
    cfg: Config,
    argv: list[str],
    opts: Options,
    *,
    app: str | None = None,
    as_json: bool = False,
    chain: IntensityChain | None = None,
    clock: Callable[[], datetime] = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    runner: Runner | None = None,
    err: TextIO = sys.stderr,
) -> int:
    """Wait (see ``wait_for_start``), then run ``argv``; its exit status, or 128 + a signal."""
    if not argv:
        raise ConfigError("run-when-green: no command given (sci-agent run-when-green ... -- CMD)")
    opts.check()
    chain = chain if chain is not None else build_chain(cfg.grid)
    try:
        with _signals_interrupt():
            wait_for_start(chain, opts, clock=clock, sleep=sleep, err=err)
    except Interrupted as exc:
        _say(err, f"{exc} while waiting: the command was not run")
        return 128 + exc.signum
    if runner is not None:
        return runner(argv)
    return run_command(cfg, argv, app=app, as_json=as_json)


def run_command(cfg: Config, argv: list[str], *, app: str | None, as_json: bool) -> int:
    """Run and measure the command as ``sci-agent measure`` does; its exit status."""
    from agent.jobs.measure import run_measured

    return run_measured(cfg, argv, app=app, as_json=as_json)


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGINT/SIGTERM raise ``Interrupted`` (main thread only; elsewhere nothing changes)."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    try:
        old = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals stay as they are
        old = {}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _say(err: TextIO, text: str) -> None:
    print(f"sci-agent: {text}", file=err, flush=True)
