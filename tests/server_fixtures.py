"""The pytest side of the real servers in ``devtools/servers.py``: fixtures, and skipping
a test when a binary is missing (failing it under ``CI=true``).

``tests/conftest.py`` imports the fixtures, so a test names one as a parameter
(``influxd``, ``victoria_metrics``, ``alertmanager``, ``capture_server``,
``tls_capture_server``); a module-scoped one is one server per test module.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devtools.servers import (
    AlertmanagerServer,
    CaptureServer,
    InfluxdServer,
    ServerProcess,
    VictoriaMetricsServer,
    find_binary,
)


def require_binary(name: str, package: str) -> str:
    """The path of ``name``; skip the test when it is missing (fail it under CI=true)."""
    path = find_binary(name)
    if path is None:
        reason = f"{name} missing: apt-get install {package}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


S = TypeVar("S", bound=ServerProcess)


def serve(server: S, request: pytest.FixtureRequest) -> Iterator[S]:
    """Start ``server`` for a fixture, stop it at teardown; show its log if a test failed."""
    failed_before = request.session.testsfailed
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()
        if request.session.testsfailed > failed_before:
            _show(request, server.log_tail())


def _show(request: pytest.FixtureRequest, text: str) -> None:
    """Write ``text`` to the terminal past output capturing (a module teardown's output
    would otherwise land on whichever test ran last, passed or not)."""
    plugins = request.config.pluginmanager
    reporter: Any = plugins.get_plugin("terminalreporter")
    capture: Any = plugins.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(text)


@pytest.fixture(scope="module")
def influxd(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[InfluxdServer]:
    """A real InfluxDB 1.x, auth on, database ``sci`` and admin user ready (per module)."""
    binary = require_binary("influxd", "influxdb")
    server = InfluxdServer(binary, tmp_path_factory.mktemp("influxd"))
    yield from serve(server, request)


@pytest.fixture(scope="module")
def victoria_metrics(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[VictoriaMetricsServer]:
    """A real VictoriaMetrics single-node server (per module)."""
    binary = require_binary("victoria-metrics", "victoria-metrics")
    server = VictoriaMetricsServer(binary, tmp_path_factory.mktemp("victoria-metrics"))
    yield from serve(server, request)


@pytest.fixture(scope="module")
def alertmanager(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[AlertmanagerServer]:
    """A real Prometheus Alertmanager (per module)."""
    binary = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    server = AlertmanagerServer(binary, tmp_path_factory.mktemp("alertmanager"))
    yield from serve(server, request)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and its key (made by the openssl CLI)."""
    openssl = require_binary("openssl", "openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def capture_server() -> Iterator[CaptureServer]:
    """A fresh ``CaptureServer`` per test."""
    server = CaptureServer()
    yield server
    server.close()


@pytest.fixture
def tls_capture_server(tmp_path: Path) -> Iterator[CaptureServer]:
    """A ``CaptureServer`` on https with a self-signed (untrusted) certificate."""
    server = CaptureServer(tls=self_signed_certificate(tmp_path))
    yield server
    server.close()
