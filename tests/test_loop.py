"""The daemon loop: no exception stops it, failures are counted, the last interval is kept."""

from __future__ import annotations

import errno
import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.config import (
    AppRule,
    Config,
    NvmlConfig,
    ProcfsConfig,
    RaplConfig,
    SensorsConfig,
    StoreConfig,
)
from agent.fdreserve import FdReserve
from agent.loop import MIN_FINAL_INTERVAL_S, Loop
from agent.records import AppEnergy, IntensityValue, IntervalResult
from agent.runtime import Agent
from agent.sampler import Sampler
from exporters.memory import MemorySink
from exporters.prometheus import MetricsSink
from tests.procfs_fixtures import FakeProc

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def interval(i: int) -> IntervalResult:
    start = T0 + timedelta(seconds=i)
    return IntervalResult(
        "h",
        start,
        start + timedelta(seconds=1),
        (),
        (),
        (),
        AppEnergy("_idle", 0.0, 0.0, 0.0),
        AppEnergy("_unattributed", 0.0, 0.0, 0.0),
    )


def scripted(outcomes: list[Exception | None]) -> Callable[[], IntervalResult]:
    """A measure that raises the scripted exceptions in turn (None: succeed)."""
    calls = iter(range(len(outcomes)))

    def measure() -> IntervalResult:
        i = next(calls)
        outcome = outcomes[i]
        if outcome is not None:
            raise outcome
        return interval(i)

    return measure


def metric_lines(sink: MetricsSink, prefix: str) -> dict[str, float]:
    text = sink.exposition().decode()
    rows = [line.rsplit(" ", 1) for line in text.splitlines() if line.startswith(prefix)]
    return {name: float(value) for name, value in rows}


def test_failed_cycles_are_counted_logged_once_and_the_loop_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad_grid = ValueError("intensity must be >= 0, got -500")
    outcomes: list[Exception | None] = [None, bad_grid, bad_grid, bad_grid, None, KeyError("x")]
    outcomes += [None]
    memory = MemorySink()
    metrics = MetricsSink(process_metrics=False)
    loop = Loop(scripted(outcomes), [memory, metrics], 0.001)
    metrics.cycle_stats = loop.stats
    with caplog.at_level(logging.DEBUG, logger="sci_agent.loop"):
        loop.run(max_cycles=len(outcomes))
    assert [r.start for r in memory.intervals] == [interval(i).start for i in (0, 4, 6)]
    assert (loop.cycles, loop.failed_cycles) == (3, 4)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # once per distinct error, with its traceback
    assert "-500" in errors[0].getMessage() and errors[0].exc_info is not None
    assert "KeyError" in errors[1].getMessage()
    recovered = [r.getMessage() for r in caplog.records if "succeed again" in r.getMessage()]
    assert recovered == [
        "cycles succeed again after 3 failed cycle(s)",
        "cycles succeed again after 1 failed cycle(s)",
    ]
    lines = metric_lines(metrics, "sci_agent_")
    assert lines['sci_agent_cycles_total{result="ok"}'] == 3
    assert lines['sci_agent_cycles_total{result="failed"}'] == 4
    last = lines["sci_agent_last_successful_cycle_timestamp_seconds"]
    assert abs(last - time.time()) < 60


def test_no_cycle_hook_no_cycle_series() -> None:
    metrics = MetricsSink(process_metrics=False)
    assert not metric_lines(metrics, "sci_agent_cycles")
    metrics.cycle_stats = lambda: (0, 0, None)  # before the first success: no timestamp
    assert metric_lines(metrics, "sci_agent_cycles_total") == {
        'sci_agent_cycles_total{result="failed"}': 0.0,
        'sci_agent_cycles_total{result="ok"}': 0.0,
    }
    assert not metric_lines(metrics, "sci_agent_last_successful")


class BrokenSink:
    name = "broken"

    def open(self) -> None: ...

    def write(self, batch: object) -> None:
        raise OSError("disk full")

    def close(self) -> None: ...


def test_a_failing_sink_or_hook_stops_neither_the_other_sinks_nor_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory = MemorySink()

    def on_result(result: IntervalResult) -> None:
        raise BrokenPipeError("stdout closed")

    loop = Loop(scripted([None] * 3), [BrokenSink(), memory], 0.001, on_result=on_result)
    loop.run(max_cycles=3)
    assert len(memory.intervals) == 3 and loop.cycles == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "sink broken failed: OSError: disk full",
        "on_result failed: BrokenPipeError: stdout closed",
    ]


def test_stop_measures_the_partial_interval_after_stopping_the_intake() -> None:
    events: list[str] = []
    memory = MemorySink()
    stop = threading.Event()

    def measure() -> IntervalResult:
        events.append("measure")
        return interval(len(events))

    loop = Loop(measure, [memory], 60.0, stop, on_stop=lambda: events.append("on_stop"))
    stop.set()  # e.g. SIGTERM long before the first tick
    loop.run()
    assert events == ["on_stop", "measure"]
    assert len(memory.intervals) == 1


def test_a_stop_during_a_cycle_still_gets_a_last_interval_of_its_own() -> None:
    stop = threading.Event()
    ends: list[float] = []
    starts: list[float] = []

    def measure() -> IntervalResult:
        starts.append(time.monotonic())
        if len(starts) == 2:
            stop.set()  # the signal lands while this cycle runs
        ends.append(time.monotonic())
        return interval(len(starts))

    loop = Loop(measure, [], 0.01, stop)
    loop.run()
    assert len(starts) == 3 and loop.cycles == 3
    # Intervals are keyed by their end in ms: the last one must not end with the one before.
    assert starts[2] - ends[1] >= MIN_FINAL_INTERVAL_S * 0.99


def test_a_cycle_out_of_descriptors_is_measured_again_with_the_reserve() -> None:
    reserve = FdReserve(4)
    assert reserve.take() == 4
    held_during: list[int] = []

    def measure() -> IntervalResult:
        held_during.append(reserve.held)
        if reserve.held:
            error = OSError(errno.EMFILE, os.strerror(errno.EMFILE), "/proc")
            raise RuntimeError("scan failed") from error
        return interval(0)

    loop = Loop(measure, [], 0.001, reserve=reserve)
    try:
        assert loop.run_cycle() is not None
    finally:
        reserve.close()
    assert held_during == [4, 0]
    assert loop.failed_cycles == 0


def fixture_config(tmp_path: Path) -> tuple[FakeProc, Config]:
    fake = FakeProc(tmp_path / "proc", cpus=2)
    fake.set_process(10, "worker", utime=0, cmdline="worker")
    cfg = Config(
        host="t",
        sensors=SensorsConfig(rapl=RaplConfig(enabled=False), nvml=NvmlConfig(enabled=False)),
        store=StoreConfig(enabled=False),
        procfs=ProcfsConfig(root=str(tmp_path / "proc"), sys_root=str(tmp_path / "sys")),
        apps=(AppRule(name="w", cmdline="worker", unit="request"),),
    )
    return fake, cfg


def fixture_sampler(tmp_path: Path) -> tuple[FakeProc, Sampler]:
    fake, cfg = fixture_config(tmp_path)
    return fake, Sampler(cfg)


def test_units_of_a_cycle_that_fails_in_scoring_count_in_the_next(tmp_path: Path) -> None:
    _, cfg = fixture_config(tmp_path)
    agent = Agent(cfg, serve_http=False)
    real_score = agent.scorer.score
    failures = iter([ValueError("intensity must be >= 0, got -500")])

    def score(
        result: IntervalResult, intensity: IntensityValue, units: dict[str, float]
    ) -> IntervalResult:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_score(result, intensity, units)

    agent.scorer.score = score  # type: ignore[method-assign]
    agent.start()
    try:
        agent.counter.add("w", "request", 5)
        with pytest.raises(ValueError, match="-500"):
            agent.measure()
        agent.counter.add("w", "request", 2)
        scored = agent.measure()
    finally:
        agent.stop()
    assert next(s.units for s in scored.sci if s.app == "w") == 7
    assert agent.counter.totals() == {"w": 7}


def test_a_cycle_whose_scan_fails_loses_nothing_the_next_one_covers_it(tmp_path: Path) -> None:
    fake, sampler = fixture_sampler(tmp_path)
    sampler.open()
    try:
        fake.set_cpu(0, user=100, system=0, idle=0)
        fake.set_cpu(1, user=0, system=0, idle=100)
        first = sampler.sample()
        # The failed window: one CPU busy (no live process's doing, e.g. interrupts), and
        # /proc holds an entry the scan cannot parse.
        fake.set_cpu(0, user=200, system=0, idle=0)
        fake.set_cpu(1, user=0, system=0, idle=200)
        (tmp_path / "proc/11").mkdir()
        (tmp_path / "proc/11/stat").write_text("11 (bad) S" + " x" * 50 + "\n")
        with pytest.raises(ValueError):
            sampler.sample()
        (tmp_path / "proc/11/stat").unlink()
        (tmp_path / "proc/11").rmdir()
        # The next window: everything idle.
        fake.set_cpu(0, user=200, system=0, idle=100)
        fake.set_cpu(1, user=0, system=0, idle=300)
        covered = sampler.sample()
    finally:
        sampler.close()
    assert covered.start == first.end  # no gap: it spans the failed window too
    # The CPU busy in the failed window is in this interval (no process claims it).
    assert covered.unattributed.cpu_joules > 0
    assert sum(p.cpu_s for p in covered.processes) == 0


def test_cpu_times_are_read_with_no_descriptor_to_spare(tmp_path: Path) -> None:
    fake, sampler = fixture_sampler(tmp_path)
    sampler.open()
    fake.set_cpu(0, user=50, system=0, idle=50)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        with pytest.raises(OSError) as full:
            while True:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
        assert full.value.errno == errno.EMFILE
        times = sampler.scanner.read_cpu_times()
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        sampler.close()
    assert (times.busy, times.total) == (50, 100)
    assert times.per_cpu == {0: (50, 100), 1: (0, 0)}


def test_sink_health_counts_failed_writes_and_reads_the_store_backlog() -> None:
    class Full(MemorySink):
        name = "store"
        backlog = 4
        dropped_intervals = 1

        def write(self, batch):  # type: ignore[no-untyped-def]
            raise OSError("disk full")

    good = MemorySink()
    loop = Loop(scripted([None, None]), [Full(), good], 1.0)
    loop.run_cycle()
    loop.run_cycle()
    health = {h.sink: h for h in loop.sink_health()}
    assert health["store"] == ("store", False, 2, 4, 1)
    assert health[good.name].up and health[good.name].failed_writes == 0
