"""A network sink that records what it is sent: the test double for every network sink.

Shipped with the library (like httpx's ``MockTransport``) so that the spool runner,
and anything built on it, can be tested without a server and without patching.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

from exporters.delivery import DeliveryError, RejectedError


class RecordingNetworkSink:
    """Accepts batches into ``received``, or raises the errors it was scripted to raise.

    ``fail(error, times)`` makes the next ``times`` calls to ``send`` raise ``error``;
    ``reject_containing(marker)`` makes any batch holding a line that contains
    ``marker`` raise ``RejectedError`` (as a server refusing bad data would).
    """

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.received: list[str] = []  # every line accepted, in order
        self.batches: list[tuple[str, ...]] = []  # every accepted batch
        self.calls = 0  # every call to send, failed or not
        self.closed = False
        self.on_send: Callable[[Sequence[str]], None] | None = None  # runs before each send
        self._script: deque[DeliveryError] = deque()
        self._markers: list[str] = []
        self._lock = threading.Lock()

    def fail(self, error: DeliveryError, times: int = 1) -> None:
        """Raise ``error`` on the next ``times`` calls to ``send``."""
        with self._lock:
            self._script.extend([error] * times)

    def reject_containing(self, marker: str) -> None:
        """Reject (``RejectedError``) every batch with a line containing ``marker``."""
        with self._lock:
            self._markers.append(marker)

    def send(self, lines: Sequence[str]) -> None:
        """Record ``lines``, or raise the next scripted error."""
        if self.on_send is not None:
            self.on_send(lines)
        with self._lock:
            self.calls += 1
            if self._script:
                raise self._script.popleft()
            for line in lines:
                for marker in self._markers:
                    if marker in line:
                        raise RejectedError(f"unable to parse {line[:40]!r}: bad line")
            self.received.extend(lines)
            self.batches.append(tuple(lines))

    def check(self) -> str:
        """Raise the next scripted error, if any, else report success."""
        with self._lock:
            if self._script:
                raise self._script.popleft()
        return f"{self.name}: ok"

    def close(self) -> None:
        self.closed = True
