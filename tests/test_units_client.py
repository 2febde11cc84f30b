"""The application-side client (sci.client) against a real LocalApi on loopback."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sci.client as client_mod
from agent.config import HttpConfig
from agent.httpserver import HttpError, Request, Response
from agent.units import LocalApi, UnitCounter
from sci.client import UnitsClient

UNITS = {"web": "request", "llm": "token", "batch": "job"}


class Agent:
    """A LocalApi plus a wrapper route (``/wrapped/v1/units``) that records each POST
    and can fail on demand before handing the request to the real handler."""

    def __init__(self, port: int = 0, token: str | None = None, max_body_bytes: int = 65536):
        self.counter = UnitCounter(UNITS)
        self.api = LocalApi(
            HttpConfig(listen=f"127.0.0.1:{port}", token=token, max_body_bytes=max_body_bytes),
            self.counter,
        )
        self.bodies: list[bytes] = []
        self.fail_with: int | None = None
        self.delay_s = 0.0
        real = self.api.match("POST", "/v1/units").handler
        self.api.add_route("POST", "/wrapped/v1/units", self._wrap(real))

    def _wrap(self, real: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            self.bodies.append(request.body)
            time.sleep(self.delay_s)
            if self.fail_with == 500:
                raise RuntimeError("agent bug")
            if self.fail_with is not None:
                raise HttpError(self.fail_with, "failing on purpose")
            return real(request)

        return handler

    @property
    def url(self) -> str:
        return self.api.url + "/wrapped"

    def __enter__(self) -> Agent:
        self.api.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.stop()


@pytest.fixture
def agent() -> Iterator[Agent]:
    with Agent() as a:
        yield a


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_counts_arrive_batched_in_one_post(agent: Agent) -> None:
    client = UnitsClient(agent.url, flush_interval_s=3600)
    for _ in range(5):
        client.count("web", "request")
    client.count("llm", "token", 400)
    client.count("llm", "token", 12)
    client.count("batch", "job", 0.5)
    assert client.flush() is True
    assert len(agent.bodies) == 1  # one POST carries every app
    assert agent.counter.take() == {"web": 5.0, "llm": 412.0, "batch": 0.5}
    assert client.pending() == {} and client.sent == 417.5
    assert client.flush() is True and len(agent.bodies) == 1  # nothing pending: no POST
    client.close()


def test_background_thread_flushes_every_interval(agent: Agent) -> None:
    client = UnitsClient(agent.url, flush_interval_s=0.05)
    try:
        client.count("web", "request", 3)
        wait_for(lambda: agent.counter.totals() == {"web": 3.0})
        client.count("web", "request", 2)
        wait_for(lambda: agent.counter.totals() == {"web": 5.0})
    finally:
        client.close()


def test_close_flushes(agent: Agent) -> None:
    client = UnitsClient(agent.url, flush_interval_s=3600)
    client.count("llm", "token", 99)
    assert agent.counter.totals() == {}
    client.close()
    assert agent.counter.totals() == {"llm": 99.0}


def test_agent_down_then_up_delivers_the_kept_counts(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    client = UnitsClient(f"http://127.0.0.1:{port}", flush_interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="sci_agent.client"):
        client.count("web", "request", 2)
        assert client.flush() is False
        client.count("web", "request", 3)
        client.count("llm", "token", 7)
        assert client.flush() is False
        assert client.flush() is False
    assert client.pending() == {("web", "request"): 5.0, ("llm", "token"): 7.0}
    warnings = [r for r in caplog.records if r.name == "sci_agent.client"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    with Agent(port=port) as agent:
        assert client.flush() is True
        assert agent.counter.totals() == {"web": 5.0, "llm": 7.0}
    client.close()


def test_background_retry_reaches_an_agent_started_later() -> None:
    port = free_port()
    client = UnitsClient(f"http://127.0.0.1:{port}", flush_interval_s=0.05)
    try:
        client.count("web", "request", 4)
        time.sleep(0.2)  # a few failed flushes
        with Agent(port=port) as agent:
            client.count("web", "request", 1)
            wait_for(lambda: agent.counter.totals() == {"web": 5.0})
    finally:
        client.close()


@pytest.mark.parametrize("status", [500, 401, 503])
def test_error_answers_are_retried(
    agent: Agent, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    client = UnitsClient(agent.url, flush_interval_s=3600)
    agent.fail_with = status
    with caplog.at_level(logging.WARNING, logger="sci_agent.client"):
        client.count("web", "request", 2)
        assert client.flush() is False
        assert client.flush() is False
    assert client.pending() == {("web", "request"): 2.0}
    assert agent.counter.totals() == {}
    assert len([r for r in caplog.records if r.name == "sci_agent.client"]) == 1
    agent.fail_with = None
    assert client.flush() is True
    assert agent.counter.totals() == {"web": 2.0}
    client.close()


def test_token_is_sent_and_a_wrong_one_keeps_the_counts() -> None:
    with Agent(token="s3cret") as agent:
        client = UnitsClient(agent.url, token="wrong", flush_interval_s=3600)
        client.count("web", "request")
        assert client.flush() is False
        client.token = "s3cret"
        assert client.flush() is True
        assert agent.counter.totals() == {"web": 1.0}
        client.close()


def test_slow_agent_times_out_without_raising(agent: Agent) -> None:
    agent.delay_s = 0.5
    agent.fail_with = 503
    client = UnitsClient(agent.url, flush_interval_s=3600, timeout_s=0.1)
    client.count("web", "request", 1)
    started = time.monotonic()
    assert client.flush() is False
    assert time.monotonic() - started < 0.45
    assert client.pending() == {("web", "request"): 1.0}
    agent.delay_s, agent.fail_with = 0.0, None
    assert client.flush() is True
    client.close()


def test_refused_report_is_dropped_and_the_rest_delivered(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    client = UnitsClient(agent.url, flush_interval_s=3600)
    client.count("web", "request", 2)
    client.count("nope", "request", 5)  # not configured on the agent: 422, never retried
    client.count("llm", "request", 1)  # wrong unit: 422
    client.count("llm", "token", 3)
    with caplog.at_level(logging.WARNING, logger="sci_agent.client"):
        assert client.flush() is True
    assert agent.counter.totals() == {"web": 2.0, "llm": 3.0}
    assert client.rejected == 6.0 and client.pending() == {}
    messages = [r.getMessage() for r in caplog.records if r.name == "sci_agent.client"]
    assert any("nope/request" in m and "not configured" in m for m in messages)
    client.close()


def test_max_pending_bounds_distinct_pairs_and_counts_drops() -> None:
    client = UnitsClient(f"http://127.0.0.1:{free_port()}", flush_interval_s=3600, max_pending=2)
    client.count("web", "request", 1)
    client.count("llm", "token", 10)
    client.count("batch", "job", 4)  # a third pair: dropped
    client.count("batch", "job", 1)
    client.count("web", "request", 2)  # a known pair still adds up
    assert client.dropped == 5.0
    assert client.pending() == {("web", "request"): 3.0, ("llm", "token"): 10.0}
    assert client.flush() is False
    assert client.pending() == {("web", "request"): 3.0, ("llm", "token"): 10.0}
    client.close()


def test_requeue_after_failure_respects_max_pending() -> None:
    port = free_port()
    client = UnitsClient(f"http://127.0.0.1:{port}", flush_interval_s=3600, max_pending=2)
    client.count("web", "request", 1)
    client.count("llm", "token", 1)
    gate = threading.Event()
    # While the first flush is out (and failing), two new pairs fill the pending map.
    original = client._post

    def slow_post(chunk: list[tuple[tuple[str, str], float]]) -> tuple[int, object]:
        gate.wait(5)
        return original(chunk)

    client._post = slow_post  # type: ignore[method-assign]
    flusher = threading.Thread(target=client.flush)
    flusher.start()
    wait_for(lambda: client.pending() == {})
    client.count("batch", "job", 1)
    client.count("other", "job", 1)
    gate.set()
    flusher.join()
    assert len(client.pending()) == 2
    assert client.dropped == 2.0
    client.close()


def test_chunks_fit_the_body_limit_and_413_splits(agent: Agent) -> None:
    client = UnitsClient(agent.url, flush_interval_s=3600, max_body_bytes=60)
    for app, unit in UNITS.items():
        client.count(app, unit, 1)
    assert client.flush() is True
    assert len(agent.bodies) == 3 and all(len(b) <= 60 for b in agent.bodies)
    client.close()
    with Agent(max_body_bytes=100) as small:  # the agent's limit is below the client's
        client = UnitsClient(small.url, flush_interval_s=3600)
        for app, unit in UNITS.items():
            client.count(app, unit, 2)
        assert client.flush() is True
        assert small.counter.totals() == {"web": 2.0, "llm": 2.0, "batch": 2.0}
        assert len(small.bodies) == 2  # the two halves of the batch refused with 413
        assert small.api.response_counts()[("POST", "/wrapped/v1/units", 413)] == 1
        client.close()


@pytest.mark.parametrize(
    "args",
    [
        ("web", "request", -1),
        ("web", "request", float("nan")),
        (None, "request", 1),
        ("web", "request", "3"),
        ("web", "request", True),
    ],
)
def test_bad_arguments_never_raise(args: tuple[object, object, object]) -> None:
    client = UnitsClient(f"http://127.0.0.1:{free_port()}", flush_interval_s=3600)
    client.count(*args)  # type: ignore[arg-type]
    assert client.pending() == {}
    client.close()


def test_bad_arguments_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    client = UnitsClient(f"http://127.0.0.1:{free_port()}", flush_interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="sci_agent.client"):
        for n in (-1, -2, 10**400, float("inf")):
            client.count("web", "request", n)
    assert len(caplog.records) == 1 and "n a finite number" in caplog.records[0].getMessage()
    assert client.pending() == {}
    client.close()


def test_bad_url_never_raises() -> None:
    client = UnitsClient("not a url", flush_interval_s=3600)
    client.count("web", "request")
    assert client.flush() is False
    client.close()


def test_env_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCI_AGENT_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("SCI_AGENT_TOKEN", "from-env")
    client = UnitsClient()
    assert (client.url, client.token) == ("http://127.0.0.1:1/v1/units", "from-env")
    explicit = UnitsClient("http://127.0.0.1:2", token="given")
    assert (explicit.url, explicit.token) == ("http://127.0.0.1:2/v1/units", "given")
    monkeypatch.delenv("SCI_AGENT_URL")
    monkeypatch.delenv("SCI_AGENT_TOKEN")
    default = UnitsClient()
    assert (default.url, default.token) == ("http://127.0.0.1:9475/v1/units", None)


def test_module_level_count_uses_the_default_client(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCI_AGENT_URL", agent.url)
    monkeypatch.setattr(client_mod, "_default", None)
    client_mod.count("web", "request")
    client_mod.count("web", "request", 2)
    assert client_mod.flush() is True
    assert agent.counter.totals() == {"web": 3.0}
    client_mod.default_client().close()


def test_count_is_cheap_and_does_not_touch_the_network() -> None:
    client = UnitsClient(f"http://127.0.0.1:{free_port()}", flush_interval_s=3600)
    started = time.perf_counter()
    for _ in range(20000):
        client.count("web", "request")
    per_call = (time.perf_counter() - started) / 20000
    assert per_call < 50e-6
    assert client.pending() == {("web", "request"): 20000.0}
    client.close()


def test_sci_client_imports_nothing_from_agent_and_flushes_at_exit(agent: Agent) -> None:
    code = (
        "import sys\n"
        "from sci.client import count\n"
        "count('web', 'request', 7)\n"
        "assert not [m for m in sys.modules if m == 'agent' or m.startswith('agent.')]\n"
    )
    env = {"SCI_AGENT_URL": agent.url, "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=30, cwd=root)
    assert agent.counter.totals() == {"web": 7.0}  # sent by the atexit close()


def test_a_token_outside_latin1_is_sent_as_utf8_and_authorises() -> None:
    with Agent(token="ключ-🔑") as agent:
        client = UnitsClient(agent.url, token="ключ-🔑", flush_interval_s=3600)
        client.count("web", "request", 3)
        assert client.flush() is True
        assert agent.counter.totals() == {"web": 3.0}
        client.close()
