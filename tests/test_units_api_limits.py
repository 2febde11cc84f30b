"""The local endpoint under load and abuse: a bounded pool, a whole-request deadline,
503 beyond the cap, and a token that may be any UTF-8 text. Real sockets on loopback."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.config import HTTP_MAX_CONNECTIONS, ConfigError, HttpConfig, loads
from agent.units import LocalApi, UnitCounter

GOOD = json.dumps({"app": "web", "unit": "request", "count": 1})
JSON = {"Content-Type": "application/json"}
#: What the endpoint may hold besides its workers' sockets: the accept queue, the
#: rejected connections it lingers on, the listening socket, its wake-up pair, epoll.
FD_SLACK = 16 + 16 + 8


def serve(**settings: object) -> LocalApi:
    api = LocalApi(HttpConfig(listen="127.0.0.1:0", **settings), UnitCounter({"web": "request"}))  # type: ignore[arg-type]
    api.start()
    return api


@pytest.fixture
def api() -> Iterator[LocalApi]:
    server = serve(request_timeout_s=2.0)
    yield server
    server.stop()


def post(
    api: LocalApi, headers: dict[str, str | bytes] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request("POST", "/v1/units", GOOD, {**JSON, **(headers or {})})
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def answer_of(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers and JSON body of one raw HTTP answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return status, headers, json.loads(body)


# -- many clients ------------------------------------------------------------------


def concurrent_posts(
    api: LocalApi, n: int
) -> list[tuple[int, dict[str, str], bytes] | BaseException]:
    """``n`` clients posting at the same moment, one thread each."""
    barrier = threading.Barrier(n)
    results: list[tuple[int, dict[str, str], bytes] | BaseException] = [
        RuntimeError("no answer")
    ] * n

    def one(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            results[i] = post(api)
        except BaseException as exc:  # recorded, asserted below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    return results


def test_64_concurrent_clients_are_all_served(api: LocalApi) -> None:
    results = concurrent_posts(api, 64)
    assert [r if isinstance(r, BaseException) else r[0] for r in results] == [202] * 64
    assert api.counter.totals() == {"web": 64.0}


def test_a_burst_beyond_the_cap_is_answered_not_reset() -> None:
    api = serve(max_connections=8)
    try:
        results = concurrent_posts(api, 200)
    finally:
        api.stop()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    statuses = [r[0] for r in results if not isinstance(r, BaseException)]
    assert set(statuses) <= {202, 503} and statuses.count(202) >= 8
    for status, headers, body in (r for r in results if not isinstance(r, BaseException)):
        if status == 503:
            assert headers["Retry-After"] == "1" and headers["Connection"] == "close"
            assert json.loads(body) == {
                "error": "the agent is busy (http.max_connections); retry later"
            }
    assert api.counter.totals() == {"web": float(statuses.count(202))}
    assert api.response_counts().get(("-", "other", 503), 0) == statuses.count(503)
    assert api.connection_stats().rejected_total == statuses.count(503)


# -- slow clients ------------------------------------------------------------------


@dataclass
class SlowClients:
    """Raw connections, each sending one byte of a request every ``every_s``."""

    port: int
    n: int
    every_s: float = 1.0
    request: bytes = b"POST /v1/units HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    socks: dict[int, socket.socket] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)
    answers: dict[int, bytes] = field(default_factory=dict)
    closed_at: dict[int, float] = field(default_factory=dict)
    started: float = 0.0

    def open(self) -> None:
        self.started = time.monotonic()
        for i in range(self.n):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=3)
            sock.setblocking(False)
            self.socks[i] = sock
            self.sent[i] = 0
            self.answers[i] = b""

    def pump(self) -> None:
        """Send the bytes that are due, read what came back, close what the server closed."""
        due = int((time.monotonic() - self.started) / self.every_s) + 1
        for i, sock in list(self.socks.items()):
            try:
                while self.sent[i] < min(due, len(self.request)):
                    sock.send(self.request[self.sent[i] : self.sent[i] + 1])
                    self.sent[i] += 1
            except OSError:
                pass  # the server has closed it; the read below sees that
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                self.answers[i] += chunk
            else:
                self.close(i)

    def close(self, i: int) -> None:
        self.socks.pop(i).close()
        self.closed_at[i] = time.monotonic() - self.started

    def close_all(self) -> None:
        for i in list(self.socks):
            self.close(i)


def worker_threads() -> int:
    return sum(t.name == "sci-agent-http-worker" for t in threading.enumerate())


def test_300_slow_clients_hold_at_most_the_cap(api: LocalApi) -> None:
    cap = api.config.max_connections
    threads_before, fds_before = threading.active_count(), open_fds()
    clients = SlowClients(api.port, 300)
    most_threads = most_workers = most_fds = 0
    good: tuple[int, dict[str, str], bytes] | None = None
    unanswered_then = 0
    try:
        clients.open()
        deadline = clients.started + 8.0
        while clients.socks and time.monotonic() < deadline:
            clients.pump()
            most_threads = max(most_threads, threading.active_count())
            most_workers = max(most_workers, worker_threads())
            most_fds = max(most_fds, open_fds() - len(clients.socks))  # the server's own
            if good is None and time.monotonic() - clients.started > 1.3:
                unanswered_then = sum(not clients.answers[i] for i in clients.socks)
                good = post(api)  # a prompt client among the slow ones
            time.sleep(0.05)
    finally:
        clients.close_all()
    assert good is not None and good[0] == 202, good
    assert unanswered_then >= cap // 2  # the slow ones were still connected then
    assert most_workers <= cap
    assert most_threads <= threads_before + cap
    assert most_fds <= fds_before + cap + FD_SLACK
    statuses = [answer_of(raw)[0] for raw in clients.answers.values()]
    assert set(statuses) <= {408, 503}, statuses
    assert statuses.count(503) >= 300 - 2 * cap  # refused without a thread
    timed_out = [i for i, raw in clients.answers.items() if raw.startswith(b"HTTP/1.1 408")]
    assert timed_out, "no slow client was closed by the deadline"
    for i in timed_out:  # each still sending when its 2 s deadline closed it
        assert 1.9 <= clients.closed_at[i] <= 3.9 + 0.5, clients.closed_at[i]
        assert answer_of(clients.answers[i])[2]["error"] == (
            "request not received within 2s (http.request_timeout_s)"
        )
    stats = api.connection_stats()
    assert stats.rejected_total + stats.evicted_total == statuses.count(503)
    assert stats.timed_out_total == len(timed_out)
    assert api.counter.totals() == {"web": 1.0}


SAMPLER = textwrap.dedent(
    """
    import json, resource, sys, time
    from agent.config import HttpConfig
    from agent.units import LocalApi, UnitCounter

    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))  # systemd's default
    api = LocalApi(HttpConfig(listen="127.0.0.1:0", request_timeout_s=2.0), UnitCounter({}))
    api.start()
    print(api.port, flush=True)
    failures = reads = 0
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:  # what the sampling loop does every cycle
        try:
            with open("/proc/stat", "rb") as f:
                f.read()
            reads += 1
        except OSError as exc:
            failures += 1
        time.sleep(0.02)
    print(json.dumps({"reads": reads, "failures": failures}))
    """
)


def test_1000_slow_connections_under_1024_fds_leave_descriptors_for_sampling() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", SAMPLER, "4"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    clients: SlowClients | None = None
    most_fds = 0
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        fds_before = len(os.listdir(f"/proc/{child.pid}/fd"))
        clients = SlowClients(port, 1000)
        clients.open()
        while child.poll() is None and time.monotonic() - clients.started < 3.5:
            clients.pump()
            most_fds = max(most_fds, len(os.listdir(f"/proc/{child.pid}/fd")))
            time.sleep(0.05)
        out, _ = child.communicate(timeout=10)
    finally:
        if clients is not None:
            clients.close_all()
        child.kill()
        child.wait()
    result = json.loads(out)
    assert result["failures"] == 0 and result["reads"] > 50, result
    assert most_fds <= fds_before + 64 + FD_SLACK, (most_fds, fds_before)
    answered = [answer_of(raw)[0] for raw in clients.answers.values() if raw]
    assert answered.count(503) >= 1000 - 2 * 64


@pytest.mark.parametrize("part", ["headers", "body"])
def test_deadline_is_for_the_whole_request_not_each_read(part: str) -> None:
    api = serve(request_timeout_s=1.0)
    head = b"POST /v1/units HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if part == "body":
        head += b"Content-Length: 1000\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
            start = time.monotonic()
            sock.sendall(head)
            sock.settimeout(0.2)
            raw = b""
            while time.monotonic() - start < 5:  # one byte every 0.2 s: never idle 1 s
                try:
                    sock.sendall(b"X-Slow: 1\r\n"[:1] if part == "headers" else b" ")
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                raw += chunk
            took = time.monotonic() - start
    finally:
        api.stop()
    status, headers, body = answer_of(raw)
    assert status == 408 and headers["Connection"] == "close"
    assert "within 1s (http.request_timeout_s)" in str(body["error"])
    assert 0.9 <= took <= 2.5


def test_idle_connection_is_closed_silently_at_the_deadline() -> None:
    api = serve(request_timeout_s=0.5)
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
            start = time.monotonic()
            assert sock.recv(100) == b""  # no answer to a request that never began
            assert time.monotonic() - start < 2
        assert api.connection_stats().timed_out_total == 1
    finally:
        api.stop()


def test_a_slow_request_makes_room_for_a_prompt_one() -> None:
    api = serve(max_connections=1, request_timeout_s=10.0)
    try:
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as slow:
            slow.sendall(b"POST /v1/units HTTP/1.1\r\n")  # then nothing more
            time.sleep(1.1)
            start = time.monotonic()
            status, _, _ = post(api)
            assert status == 202 and time.monotonic() - start < 1.0
            raw = slow.makefile("rb").read()
        status, headers, body = answer_of(raw)
        assert status == 503 and headers["Retry-After"] == "1" and "busy" in str(body["error"])
        assert api.connection_stats().evicted_total == 1
    finally:
        api.stop()


def test_keep_alive_still_works_within_the_pool(api: LocalApi) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    try:
        for _ in range(5):
            conn.request("POST", "/v1/units", GOOD, JSON)
            assert conn.getresponse().read() == b'{"accepted":1}\n'
    finally:
        conn.close()
    assert api.counter.totals() == {"web": 5.0}


# -- the token ---------------------------------------------------------------------


@pytest.mark.parametrize("token", ["café", "ключ-🔑", "s3cret"])
def test_any_utf8_token_authorises(token: str) -> None:
    api = serve(token=token)
    try:
        sent = b"Bearer " + token.encode("utf-8")
        assert post(api, {"Authorization": sent})[0] == 202
        assert post(api, {"Authorization": sent + b"x"})[0] == 401
        assert post(api, {"Authorization": b"Bearer " + token.encode("utf-16")})[0] == 401
        if token == "café":  # a str header, as http.client and sci.client send it: latin-1
            assert post(api, {"Authorization": "Bearer café"})[0] == 202
            assert post(api, {"Authorization": b"Bearer caf\xc3"})[0] == 401
    finally:
        api.stop()


# -- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_connections = 0", "http.max_connections: must be 1-1024, got 0"),
        ("max_connections = 5000", "http.max_connections: must be 1-1024, got 5000"),
        ("max_connections = 2.5", "http.max_connections: expected an integer"),
        ("request_timeout_s = 0", "http.request_timeout_s: must be greater than 0"),
        ("request_timeout_s = nan", "http.request_timeout_s: must be a finite number"),
        ("request_timeout_s = inf", "http.request_timeout_s: must be a finite number"),
        ("request_timeout_s = 301", "at most 300 seconds, got 301.0"),
    ],
)
def test_pool_settings_are_validated(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        loads(f"[http]\n{text}\n")


def test_pool_settings_default_and_decode() -> None:
    assert (HttpConfig().max_connections, HttpConfig().request_timeout_s) == (64, 10.0)
    cfg = loads("[http]\nmax_connections = 8\nrequest_timeout_s = 3\n")
    assert (cfg.http.max_connections, cfg.http.request_timeout_s) == (8, 3.0)


def test_unit_file_leaves_descriptors_well_above_the_cap() -> None:
    unit = (Path(__file__).parent.parent / "deploy/systemd/sci-agent.service").read_text()
    limits = [
        line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("LimitNOFILE=")
    ]
    assert len(limits) == 1 and int(limits[0]) >= 4 * (HTTP_MAX_CONNECTIONS + FD_SLACK)
