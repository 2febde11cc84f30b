"""The spool runner: backoff, auth, bisecting rejects, flushing on stop, counters."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.attribution import attribute
from agent.records import ComponentReading, CpuActivity, IntervalResult, ProcessActivity
from exporters.delivery import AuthError, RejectedError, RetryableError
from exporters.points import interval_points
from exporters.runner import MAX_BISECT_SENDS, RunnerStats, SpoolRunner
from exporters.spool import Spool
from exporters.spooled import SpooledSink
from exporters.testing import RecordingNetworkSink


class FakeTime:
    """A clock that only moves when something sleeps (or a sink takes time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def lines(start: int, count: int) -> list[str]:
    return [f"m,host=h v={i}i {i}" for i in range(start, start + count)]


def make(
    tmp_path: Path,
    batch_size: int = 10,
    max_backoff_s: float = 8.0,
    jitter: Callable[[], float] = lambda: 1.0,  # the top of the full-jitter range
) -> tuple[RecordingNetworkSink, Spool, SpoolRunner, FakeTime]:
    sink = RecordingNetworkSink("influxdb")
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=4096)
    ft = FakeTime()
    runner = SpoolRunner(
        sink,
        spool,
        batch_size=batch_size,
        max_backoff_s=max_backoff_s,
        clock=ft.clock,
        sleep=ft.sleep,
        wall_clock=lambda: 1_700_000_000.0,
        jitter=jitter,
    )
    return sink, spool, runner, ft


def run_until_empty(runner: SpoolRunner, max_steps: int = 1000) -> list[float]:
    delays = []
    for _ in range(max_steps):
        delay = runner.step()
        if delay == runner.flush_interval_s and runner.backlog_lines == 0:
            return delays
        delays.append(delay)
    raise AssertionError("the runner did not drain the spool")


def test_retryable_errors_back_off_then_deliver_everything_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink, spool, runner, _ = make(tmp_path)
    spool.append(lines(0, 25))
    sink.fail(RetryableError("HTTP 503: service unavailable"), times=6)
    with caplog.at_level(logging.INFO, logger="sci_agent.export"):
        delays = run_until_empty(runner)
    assert delays[:6] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped at max_backoff_s
    assert sink.received == lines(0, 25)
    assert runner.sent_lines == 25 and runner.retries == 6 and runner.rejected_lines == 0
    assert runner.backlog_lines == 0 and runner.last_success == 1_700_000_000.0
    assert runner.last_error == "HTTP 503: service unavailable"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one message per failure streak, not one per retry
    assert "influxdb: delivered 10 lines after 6 failures" in caplog.text
    spool.close()


def test_backoff_uses_full_jitter(tmp_path: Path) -> None:
    draws = iter([0.25, 0.5])
    sink, spool, runner, _ = make(tmp_path, jitter=lambda: next(draws))
    spool.append(lines(0, 1))
    sink.fail(RetryableError("timeout"), times=2)
    assert runner.step() == 0.25 * 0.5
    assert runner.step() == 0.5 * 1.0
    spool.close()


def test_auth_errors_are_logged_once_and_keep_the_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink, spool, runner, _ = make(tmp_path)
    spool.append(lines(0, 5))
    sink.fail(AuthError("HTTP 401: unauthorized access"), times=4)
    sink.fail(AuthError("HTTP 403: insufficient permissions"), times=1)
    with caplog.at_level(logging.ERROR, logger="sci_agent.export"):
        assert [runner.step() for _ in range(5)] == [8.0] * 5  # retried every max_backoff_s
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # once per distinct message
    assert all("check the token in [influxdb]" in e for e in errors)
    assert "401" in errors[0] and "403" in errors[1]
    assert runner.backlog_lines == 5 and sink.received == []
    assert run_until_empty(runner) == [0.0]
    assert sink.received == lines(0, 5)
    spool.close()


def test_a_rejected_batch_is_bisected_and_only_bad_lines_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink, spool, runner, _ = make(tmp_path, batch_size=16)
    batch = lines(0, 16)
    batch[0] = "m,host=h BAD=" + "x" * 300
    batch[9] = "m,host=h v=BAD 9"
    spool.append(batch)
    sink.reject_containing("BAD")
    with caplog.at_level(logging.ERROR, logger="sci_agent.export"):
        assert runner.step() == 0.0
    assert sink.received == [line for line in batch if "BAD" not in line]
    assert runner.rejected_lines == 2 and runner.sent_lines == 14
    assert runner.backlog_lines == 0  # acknowledged
    first = caplog.records[0].getMessage()
    assert "rejected a batch of 16 line(s)" in first
    assert first.endswith("m,host=h BAD=" + "x" * (200 - 13))  # the first line, cut at 200
    assert "dropped 2 rejected line(s) of 16" in caplog.text
    spool.close()


def test_bisecting_a_wholly_bad_batch_is_bounded(tmp_path: Path) -> None:
    sink, spool, runner, _ = make(tmp_path, batch_size=2000)
    spool.append([f"BAD {i}" for i in range(2000)])
    sink.reject_containing("BAD")
    runner.step()
    assert sink.calls <= 1 + MAX_BISECT_SENDS
    assert runner.rejected_lines == 2000 and runner.backlog_lines == 0
    spool.close()


def test_unexpected_exceptions_are_retried(tmp_path: Path) -> None:
    sink, spool, runner, _ = make(tmp_path)
    spool.append(lines(0, 3))
    calls = [0]

    def boom(batch: Sequence[str]) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError("connection reset")

    sink.on_send = boom
    assert runner.step() == 0.5
    assert runner.last_error == "OSError: connection reset"
    assert run_until_empty(runner) == [0.0]
    assert sink.received == lines(0, 3)
    spool.close()


def test_stop_flushes_until_the_deadline_and_leaves_the_rest(tmp_path: Path) -> None:
    sink, spool, runner, ft = make(tmp_path)
    spool.append(lines(0, 100))

    def slow(batch: Sequence[str]) -> None:
        ft.now += 1.0  # each request takes a second

    sink.on_send = slow
    runner.stop(deadline_s=3.5)
    assert sink.received == lines(0, 40)  # four batches fit in 3.5 s
    assert runner.backlog_lines == 60
    spool.close()
    with Spool(tmp_path / "spool", max_bytes=1 << 20, segment_bytes=4096) as again:
        rest: list[str] = []
        while (batch := again.read_batch(1000)) is not None:
            rest.extend(batch.lines)
            again.ack(batch)
    assert rest == lines(40, 60)


def test_stop_gives_up_at_once_when_the_sink_refuses(tmp_path: Path) -> None:
    sink, spool, runner, _ = make(tmp_path)
    spool.append(lines(0, 30))
    sink.fail(RetryableError("connection refused"), times=100)
    runner.stop(deadline_s=60)
    assert sink.calls == 1 and runner.backlog_lines == 30
    spool.close()


def test_counters_for_metrics(tmp_path: Path) -> None:
    sink, spool, runner, _ = make(tmp_path)
    spool.append([*lines(0, 9), "BAD"])
    sink.reject_containing("BAD")
    sink.fail(RetryableError("429"), times=1)
    run_until_empty(runner)
    spool.append(lines(9, 4))
    assert runner.stats() == RunnerStats("influxdb", 9, 1, 4, 1, 0)  # no line dropped
    spool.close()


def interval(end: datetime) -> IntervalResult:
    procs = [ProcessActivity(i, i, f"p{i}", f"app{i % 3}", i, i << 20) for i in range(1, 9)]
    readings = [ComponentReading("cpu0", "cpu", "rapl", 50.0)]
    cpu = CpuActivity(100, 200, 2)
    return attribute("h1", end - timedelta(seconds=5), end, readings, cpu, procs, 1 << 34)


def test_spooled_sink_delivers_in_the_background_and_flushes_on_close(tmp_path: Path) -> None:
    sink = RecordingNetworkSink("influxdb")
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    runner = SpoolRunner(sink, spool, batch_size=30, flush_interval_s=60.0)
    spooled = SpooledSink("influxdb", spool, runner, top_n=3, stop_deadline_s=5.0)
    now = datetime.now(UTC).replace(microsecond=0)
    results = [interval(now + timedelta(seconds=5 * i)) for i in range(4)]
    expected = [p.to_line() for r in results for p in interval_points(r, 3)]
    spooled.open()
    spooled.write(results[:1])
    time.sleep(0.05)
    assert sink.received == []  # under batch_size: waits for the flush interval
    spooled.write(results[1:3])  # reaches batch_size: the runner is woken
    deadline = time.monotonic() + 2.0
    while not sink.received and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sink.received, "the sender was not woken"
    spooled.write(results[3:])
    spooled.close()  # flushes within the deadline
    assert sink.received == expected and sink.closed
    assert runner.sent_lines == len(expected) and runner.backlog_lines == 0


def test_a_batch_refused_whole_is_delivered_in_halves(tmp_path: Path) -> None:
    sink, spool, runner, _ = make(tmp_path, batch_size=8)
    spool.append(lines(0, 8))
    sink.fail(RejectedError("HTTP 413: the batch is larger than the server accepts"))
    assert runner.step() == 0.0
    assert sink.batches == [tuple(lines(0, 4)), tuple(lines(4, 4))]
    assert runner.rejected_lines == 0 and runner.sent_lines == 8
    spool.close()
