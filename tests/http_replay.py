"""Recorded-style grid API answers, served by ``agent.httpclient.testing``'s double.

``fixture(name)`` loads ``tests/fixtures/grid/NAME`` (JSON), shaped like the real APIs'
documented answers; ``ReplayServer`` is the shipped ``HttpTestServer`` (404 for paths
not routed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.httpclient.testing import HttpTestServer as ReplayServer
from agent.httpclient.testing import Recorded, Reply
from agent.httpclient.testing import http_test_server as replay_server

__all__ = ["FIXTURES", "Recorded", "ReplayServer", "Reply", "fixture", "replay_server"]

FIXTURES = Path(__file__).parent / "fixtures" / "grid"


def fixture(name: str) -> Any:
    """A recorded-style answer from ``tests/fixtures/grid``."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))
