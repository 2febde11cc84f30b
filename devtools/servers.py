"""Real servers on loopback for the tests and the benchmarks: InfluxDB 1.x (``influxd``),
VictoriaMetrics and Prometheus Alertmanager.

Each server runs as a child process with its config, data and log under one temporary
directory, on ports picked once: ``stop()`` then ``start()`` (or ``restart()``) brings
back the SAME instance, data and port included, for outage tests. Nothing here imports
pytest: the fixtures (and skipping when a binary is missing) are in
``tests/server_fixtures.py``; the benchmarks start servers themselves.

``CaptureServer`` is the opposite: a tiny in-process HTTP server that records each
request exactly and answers with whatever status a test scripts. ``WebhookReceiver``
is one for alert webhooks that also verifies Standard Webhooks signatures with the
official ``standardwebhooks`` package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TextIO

READY_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_binary(name: str) -> str | None:
    """The path of the executable ``name`` (``PATH``, then ``/usr/bin``), or None."""
    return shutil.which(name, path=os.pathsep.join((os.environ.get("PATH", ""), "/usr/bin")))


class ServerProcess:
    """One server binary run from ``workdir`` on a fixed loopback port.

    Subclasses give the command line, the readiness probe and what to do after the
    first start. The log (stdout and stderr) is appended to ``log_path`` across
    restarts.
    """

    name = "server"
    ready_path = "/ping"
    ready_status = 204

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.starts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write what the first start needs (config files); runs before each start."""

    def after_first_start(self) -> None:
        """Set the server up once it first answers (users, databases)."""

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the process and wait until it answers; raise RuntimeError with its log."""
        if self.running:
            return
        self.prepare()
        self._log = self.log_path.open("a", encoding="utf-8")
        self._log.write(f"==== start {self.starts + 1}: {' '.join(self.command())}\n")
        self._log.flush()
        self._process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest does not hit it first
        )
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            code = self._process.poll()
            if code is not None:
                self._close_log()
                raise RuntimeError(
                    f"{self.name} exited with {code} before answering\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} did not answer {self.ready_path} within {timeout_s:g}s\n"
                    + self.log_tail()
                )
            time.sleep(0.05)
        self.starts += 1
        if self.starts == 1:
            try:
                self.after_first_start()
            except Exception as exc:
                self.stop()
                raise RuntimeError(f"{self.name} set-up failed: {exc}\n{self.log_tail()}") from exc

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL); its data stays."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        self._close_log()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections open, nothing answers (timeouts)."""
        assert self._process is not None, f"{self.name} is not running"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a ``pause``d process (SIGCONT)."""
        assert self._process is not None, f"{self.name} is not running"
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start the same instance: same data directory, same port."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 80) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        tail = text.splitlines()[-lines:]
        return f"---- {self.name} log ({self.log_path}) ----\n" + "\n".join(tail)

    def http(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
    ) -> tuple[int, bytes]:
        """One request to the server: (status, body), error statuses included."""
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

    def _answers(self) -> bool:
        try:
            status, _ = self.http("GET", self.ready_path, timeout_s=1.0)
        except OSError:
            return False
        return status == self.ready_status

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class InfluxdServer(ServerProcess):
    """InfluxDB 1.x with authentication on: an admin user and one database.

    ``query`` runs InfluxQL as the admin (``epoch=ms`` timestamps) and returns the
    parsed JSON, raising on any error; ``rows`` flattens a query's series to dicts.
    """

    name = "influxd"

    def __init__(
        self,
        binary: str,
        workdir: Path,
        port: int | None = None,
        *,
        database: str = "sci",
        username: str = "admin",
        password: str = "admin-secret",
    ) -> None:
        super().__init__(binary, workdir, port)
        self.rpc_port = free_port()
        self.database = database
        self.username = username
        self.password = password
        self.config_path = workdir / "influxdb.conf"

    def command(self) -> list[str]:
        return [self.binary, "-config", str(self.config_path)]

    def prepare(self) -> None:
        d = self.workdir
        self.config_path.write_text(
            f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{d / "meta"}"
  logging-enabled = false

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  index-version = "inmem"
  wal-fsync-delay = "0s"
  query-log-enabled = false

[monitor]
  store-enabled = false

[retention]
  enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = true
  log-enabled = true
  pprof-enabled = false
  unix-socket-enabled = false

[logging]
  level = "info"
  suppress-logo = true
""",
            encoding="utf-8",
        )

    def after_first_start(self) -> None:
        # With no user yet, influxd lets anyone create the first admin.
        password = self.password.replace("'", "\\'")
        self.query(
            f"CREATE USER \"{self.username}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES",
            auth=False,
        )
        self.create_database(self.database)

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.query(f'DROP DATABASE "{name}"')

    def create_user(self, name: str, password: str, grant: str | None = None) -> None:
        """A non-admin user, with ``grant`` (READ, WRITE, ALL) on ``self.database``."""
        self.query(f"CREATE USER \"{name}\" WITH PASSWORD '{password}'")
        if grant:
            self.query(f'GRANT {grant} ON "{self.database}" TO "{name}"')

    def query(self, q: str, db: str | None = None, *, auth: bool = True) -> dict[str, Any]:
        """Run InfluxQL (POST /query, epoch=ms); raise AssertionError on any error."""
        params = {"q": q, "epoch": "ms"}
        if db:
            params["db"] = db
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if auth:
            pair = f"{self.username}:{self.password}".encode()
            headers["Authorization"] = "Basic " + b64encode(pair).decode()
        body = urllib.parse.urlencode(params).encode()
        status, raw = self.http("POST", "/query", body=body, headers=headers)
        data: dict[str, Any] = json.loads(raw) if raw else {}
        errors = [data.get("error")] + [r.get("error") for r in data.get("results", [])]
        if status != 200 or any(errors):
            raise AssertionError(f"influxd query {q!r} failed: {status} {raw[:300]!r}")
        return data

    def rows(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Every row of every series ``q`` returns, as {column: value} (+ series tags)."""
        out: list[dict[str, Any]] = []
        for result in self.query(q, db).get("results", []):
            for series in result.get("series", []):
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(series.get("tags", {}))
                    row["_name"] = series.get("name")
                    out.append(row)
        return out


class VictoriaMetricsServer(ServerProcess):
    """VictoriaMetrics single-node: accepts line protocol at /write and /api/v2/write.

    A field becomes the metric ``<measurement>_<field>`` and tags become labels.
    Samples are searchable only after a flush: ``export`` forces one first.
    Deduplication at 1 ms makes a replayed point (same series and timestamp) one
    sample, as InfluxDB's overwrite does.
    """

    name = "victoria-metrics"
    ready_path = "/health"
    ready_status = 200

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=1y",
            "-dedup.minScrapeInterval=1ms",
            "-search.disableCache",
            "-search.latencyOffset=0s",
            "-loggerLevel=INFO",
        ]

    def force_flush(self) -> None:
        """Make every ingested sample searchable now."""
        status, body = self.http("GET", "/internal/force_flush")
        assert status == 200, f"force_flush answered {status}: {body[:200]!r}"

    def export(self, match: str) -> list[dict[str, Any]]:
        """Raw samples of the series matching ``match`` (a PromQL series selector)."""
        self.force_flush()
        status, body = self.http("GET", "/api/v1/export", {"match[]": match})
        assert status == 200, f"export answered {status}: {body[:200]!r}"
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


class AlertmanagerServer(ServerProcess):
    """Prometheus Alertmanager (Debian's ``prometheus-alertmanager``), one instance.

    A route to a receiver that sends nothing, clustering off, data under ``workdir``.
    ``alerts`` lists what ``GET /api/v2/alerts`` shows (active, silenced and inhibited;
    a resolved alert is no longer listed).
    """

    name = "alertmanager"
    ready_path = "/-/ready"
    ready_status = 200

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        super().__init__(binary, workdir, port)
        self.config_path = workdir / "alertmanager.yml"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]

    def prepare(self) -> None:
        self.config_path.write_text(
            """\
route:
  receiver: "null"
  group_by: ["alertname"]
receivers:
  - name: "null"
""",
            encoding="utf-8",
        )

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` with ``params`` (e.g. active="true"), parsed."""
        status, body = self.http("GET", "/api/v2/alerts", params or None)
        assert status == 200, f"GET /api/v2/alerts answered {status}: {body[:300]!r}"
        data: list[dict[str, Any]] = json.loads(body)
        return data


@dataclass
class Captured:
    """One request exactly as ``CaptureServer`` received it (headers case-insensitive)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # an email.message.Message: case-insensitive .get()
    body: bytes


@dataclass
class Answer:
    status: int = 204
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


class CaptureServer:
    """A loopback HTTP server recording every request; ``GET /ping`` and ``/health``
    answer 204, everything else answers ``answer`` (204 by default)."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: (certificate, key) files to serve https instead of http."""
        self.requests: list[Captured] = []
        self.scheme = "https" if tls else "http"
        self.answer = Answer()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urllib.parse.urlsplit(self.path)
                outer.requests.append(
                    Captured(
                        self.command,
                        parts.path,
                        urllib.parse.parse_qs(parts.query, keep_blank_values=True),
                        self.headers,
                        body,
                    )
                )
                if self.command == "GET" and parts.path in ("/ping", "/health"):
                    answer = Answer(204, headers={"X-Influxdb-Version": "capture-1.0"})
                else:
                    answer = outer.answer
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if answer.body:
                    self.wfile.write(answer.body)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def reply(self, status: int, body: str | bytes = b"", **headers: str) -> None:
        """Answer every following non-ping request with ``status`` and ``body``."""
        raw = body.encode() if isinstance(body, str) else body
        if raw and "Content-Type" not in headers:
            headers["Content-Type"] = "application/json"
        self.answer = Answer(status, raw, {k.replace("_", "-"): v for k, v in headers.items()})

    def writes(self) -> list[Captured]:
        """The requests that were not pings."""
        return [r for r in self.requests if r.path not in ("/ping", "/health")]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Received:
    """One request a ``WebhookReceiver`` got, with its Standard Webhooks verdict."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int  # what the receiver answered
    verified: bool | None  # None when the receiver has no secret
    error: str | None  # why verification failed
    at: float  # time.monotonic() when it arrived

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """A loopback webhook receiver that verifies Standard Webhooks signatures with the
    official ``standardwebhooks`` package (not our signing code).

    Answers the scripted ``answers`` in order, then ``default``; each may delay.
    ``port`` 0 picks a free one; a given port lets a test bring a receiver up where a
    webhook already points (``start`` again after ``close`` reuses it).
    """

    def __init__(
        self,
        secret: str | None = None,
        port: int = 0,
        answers: list[Answer] | None = None,
        default: Answer | None = None,
    ) -> None:
        self.secret = secret
        self.answers = list(answers or [])
        self.default = default or Answer(200, b'{"ok":true}')
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified, error = outer._verify(body, headers)
                with outer.lock:
                    answer = outer.answers.pop(0) if outer.answers else outer.default
                    outer.received.append(
                        Received(self.path, headers, body, answer.status, verified, error, arrived)
                    )
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def _verify(self, body: bytes, headers: dict[str, str]) -> tuple[bool | None, str | None]:
        if self.secret is None:
            return None, None
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            return False, str(exc)
        return True, None

    def accepted(self) -> list[Received]:
        """The requests answered with a 2xx."""
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def wait_for(self, count: int, timeout_s: float = 10.0, accepted: bool = True) -> None:
        """Wait until ``count`` requests were accepted (or received); fail after timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = len(self.accepted()) if accepted else len(self.received)
            if got >= count:
                return
            time.sleep(0.02)
        raise AssertionError(
            f"receiver got {len(self.received)} request(s), {len(self.accepted())} accepted;"
            f" wanted {count} within {timeout_s:g}s"
        )

    def close(self) -> None:
        """Stop listening (the port is closed: connections are refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
