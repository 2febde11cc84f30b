"""Test-wide settings: reproducible property tests in CI, exploring ones locally."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")

# The real-server fixtures, for every test module (one server per module).
from tests.server_fixtures import (  # noqa: E402
    alertmanager,
    capture_server,
    influxd,
    tls_capture_server,
    victoria_metrics,
)

__all__ = ["alertmanager", "capture_server", "influxd", "tls_capture_server", "victoria_metrics"]
