"""systemd's notify protocol against a real datagram socket, and journald's log form."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from agent.journal import JournalFormatter, under_journald
from agent.sdnotify import Notifier, watchdog_period_s
from devtools.servers import free_port
from tests.test_agent_run import AGENT, write_config


class NotifySocket:
    """A bound AF_UNIX datagram socket recording what arrives, with arrival times."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, field: str, after: float = 0.0, timeout_s: float = 30.0) -> float:
        """The arrival time of the first message holding ``field`` (a line) after ``after``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, text in list(self.messages):
                if at >= after and any(line.startswith(field) for line in text.split("\n")):
                    return at
            time.sleep(0.02)
        raise AssertionError(f"no {field!r} after {after}; got {self.messages}")

    def with_field(self, field: str) -> list[tuple[float, str]]:
        return [(at, t) for at, t in self.messages if field in t.split("\n")]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _start(cfg: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


# -- the protocol with the real agent ----------------------------------------------------


def test_ready_watchdog_status_reload_stopping(tmp_path: Path) -> None:
    """interval_s = 5 and WATCHDOG_USEC = 1 s: pings every 0.5 s between ticks all the same."""
    path = str(tmp_path / "notify.sock")
    received = NotifySocket(path)
    cfg = write_config(tmp_path, "[http]\nenabled = false\n", interval_s=5.0)
    agent = _start(cfg, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    try:
        ready = received.wait_for("READY=1")
        status = received.wait_for("STATUS=", after=ready + 1)  # the first cycle's, ~5 s on
        pings = [at for at, _ in received.with_field("WATCHDOG=1") if ready <= at <= status]
        gaps = [b - a for a, b in pairwise(pings)]
        assert len(pings) >= 7, received.messages  # ~5 s at one ping per 0.5 s
        assert all(0.3 < g < 1.0 for g in gaps), gaps  # always inside WATCHDOG_USEC
        assert 0.4 < statistics.median(gaps) < 0.65, gaps  # at half of it
        line = next(t for at, t in received.messages if at == status)
        assert re.search(r"STATUS=\d+\.\d W, \d+ apps; store ok", line), line

        agent.send_signal(signal.SIGHUP)
        sent = time.monotonic()
        reloading = received.wait_for("RELOADING=1", after=sent)
        assert reloading - sent < 1.5  # not held back until the next tick
        text = next(t for at, t in received.messages if at == reloading)
        usec = int(re.search(r"^MONOTONIC_USEC=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
        assert abs(usec / 1e6 - reloading) < 1.0  # CLOCK_MONOTONIC, as time.monotonic here
        received.wait_for("READY=1", after=reloading)

        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
        received.close()
    assert agent.returncode == 0, err
    assert received.with_field("STOPPING=1"), received.messages
    assert "partial interval" in err


def test_abstract_socket_and_no_pings_without_watchdog(tmp_path: Path) -> None:
    name = f"@sci-agent-test-{os.getpid()}-{time.monotonic_ns()}"
    received = NotifySocket(b"\0" + name[1:].encode())
    cfg = write_config(tmp_path, "[http]\nenabled = false\n", interval_s=0.5)
    agent = _start(cfg, {"NOTIFY_SOCKET": name})
    try:
        ready = received.wait_for("READY=1")
        received.wait_for("STATUS=", after=ready)
        time.sleep(1.0)
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
        received.close()
    assert agent.returncode == 0, err
    assert not received.with_field("WATCHDOG=1")
    assert received.with_field("STOPPING=1")


def test_status_names_the_influxdb_backlog_while_its_server_is_down(tmp_path: Path) -> None:
    path = str(tmp_path / "n.sock")
    received = NotifySocket(path)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    influx = (
        f'[influxdb]\nenabled = true\napi = "v1"\nurl = "{dead}"\ndatabase = "sci"\n'
        f'timeout_s = 0.5\n[spool]\ndir = "{tmp_path}/spool"\nflush_deadline_s = 0.5\n'
    )
    cfg = write_config(tmp_path, "[http]\nenabled = false\n" + influx, interval_s=0.3)
    agent = _start(cfg, {"NOTIFY_SOCKET": path})
    backlog = re.compile(r"STATUS=.*; store ok; influxdb ok, backlog ([1-9]\d*) lines")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(backlog.search(t) for _, t in received.messages):
                break
            time.sleep(0.1)
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
        received.close()
    assert any(backlog.search(t) for _, t in received.messages), received.messages


def test_watchdog_pid_of_another_process_means_no_pings(tmp_path: Path) -> None:
    path = str(tmp_path / "n.sock")
    received = NotifySocket(path)
    cfg = write_config(tmp_path, "[http]\nenabled = false\n", interval_s=0.5)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    agent = _start(cfg, env)
    try:
        received.wait_for("READY=1")
        time.sleep(1.0)
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
        received.close()
    assert not received.with_field("WATCHDOG=1")


# -- the notifier's edges ---------------------------------------------------------------


def test_notifier_is_a_no_op_without_or_with_a_dead_socket(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert not Notifier({}).enabled and Notifier({}).ready() is False
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    dead = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.DEBUG, logger="sci_agent.sdnotify"):
        assert dead.ready() is False
        assert dead.watchdog() is False
    assert len([r for r in caplog.records if "sd_notify" in r.message]) == 1  # logged once
    dead.close()


def test_notifier_sends_one_datagram_per_message(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    received = NotifySocket(path)
    notifier = Notifier({"NOTIFY_SOCKET": path})
    try:
        assert notifier.ready("two\nlines") and notifier.stopping()
        received.wait_for("STOPPING=1")
    finally:
        notifier.close()
        received.close()
    assert [t for _, t in received.messages] == ["READY=1\nSTATUS=two lines", "STOPPING=1"]


@pytest.mark.parametrize(
    ("env", "period"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "42"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "43"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
    ],
)
def test_watchdog_period(env: dict[str, str], period: float | None) -> None:
    assert watchdog_period_s(env, pid=42) == period


# -- journald's form ---------------------------------------------------------------------


def test_journald_lines_have_a_priority_no_timestamp_and_one_line_per_traceback(
    tmp_path: Path,
) -> None:
    """A real agent under INVOCATION_ID, then a traceback logged the same way."""
    cfg = write_config(tmp_path, "[http]\nenabled = false\n", interval_s=0.3)
    agent = _start(cfg, {"INVOCATION_ID": "0123456789abcdef", "JOURNAL_STREAM": ""})
    time.sleep(2.0)
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    lines = err.splitlines()
    assert agent.returncode == 0, err
    assert lines and all(re.match(r"<[0-7]>sci_agent[\w.]*: ", line) for line in lines), err
    assert any(line.startswith("<6>sci_agent: sampling every") for line in lines)
    assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", err)  # journald stamps itself
    code = (
        "import logging\n"
        "from agent.journal import setup_logging\n"
        "setup_logging('info')\n"
        "try:\n    1 / 0\n"
        "except ZeroDivisionError:\n    logging.getLogger('sci_agent.loop').exception('boom')\n"
        "logging.getLogger('sci_agent').warning('careful')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "INVOCATION_ID": "x"},
        timeout=30,
        check=True,
    )
    first, second = out.stderr.splitlines()
    assert first.startswith("<3>sci_agent.loop: boom | Traceback (most recent call last):")
    assert first.endswith("ZeroDivisionError: division by zero")
    assert second == "<4>sci_agent: careful"


def test_plain_lines_keep_their_timestamp_outside_systemd(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "[http]\nenabled = false\n", interval_s=0.3)
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "JOURNAL_STREAM")}
    agent = subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"], stderr=subprocess.PIPE, text=True, env=env
    )
    time.sleep(1.5)
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO sci_agent: sampling", err, re.M)
    assert "<6>" not in err


def test_journal_stream_must_match_stderr(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w") as stream:
        st = os.fstat(stream.fileno())
        assert under_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not under_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not under_journald(stream, {})
        # a redirected stderr inherits JOURNAL_STREAM from its service: it decides
        assert not under_journald(stream, {"JOURNAL_STREAM": "1:2", "INVOCATION_ID": "abc"})
    assert under_journald(io.StringIO(), {"INVOCATION_ID": "abc"})
    assert not under_journald(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no descriptor


def test_journal_formatter_levels() -> None:
    fmt = JournalFormatter()
    levels = [(logging.DEBUG, "<7>"), (logging.ERROR, "<3>"), (logging.CRITICAL, "<2>")]
    for level, prefix in levels:
        record = logging.LogRecord("sci_agent", level, __file__, 1, "a\nb", None, None)
        assert fmt.format(record) == f"{prefix}sci_agent: a | b"


def test_a_config_refused_at_start_is_an_error_entry_under_systemd(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "[http]\nenabled = false\n", interval_s=-1)
    out = subprocess.run(
        [*AGENT, "--config", str(cfg), "run"],
        capture_output=True,
        text=True,
        env={**os.environ, "INVOCATION_ID": "x"},
        timeout=30,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("<3>sci-agent: config error: ")
    assert "interval_s" in out.stderr and len(out.stderr.splitlines()) == 1
