"""Test-wide settings: reproducible property tests in CI, exploring ones locally; and the
real-server fixtures (``tests/server_fixtures.py``) for every test module."""

from __future__ import annotations

import os

from hypothesis import settings

from tests.server_fixtures import (
    alertmanager,
    capture_server,
    influxd,
    tls_capture_server,
    victoria_metrics,
)

__all__ = ["alertmanager", "capture_server", "influxd", "tls_capture_server", "victoria_metrics"]

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")
