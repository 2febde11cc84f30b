"""What a network sink implements, and how it reports a failed delivery.

A network sink only sends: the spool runner owns batching, retries and backoff
(as Telegraf tells its output authors). ``send`` raises one of the three errors
below, and the runner acts on the class:

- ``RetryableError`` (network down, timeout, 429, 5xx): keep the batch, back off, retry;
- ``AuthError`` (401, 403): keep the batch and keep spooling, retry slowly, say so;
- ``RejectedError`` (another 4xx: bad data): log the batch's first line, drop it, go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class DeliveryError(Exception):
    """A batch could not be delivered; the message says why (never a credential)."""


class RetryableError(DeliveryError):
    """A transient failure: the same batch may succeed later."""


class AuthError(DeliveryError):
    """The server refused the credentials; retrying helps only once they are fixed."""


class RejectedError(DeliveryError):
    """The server refused the data itself; retrying the same batch can never succeed."""


class NetworkSink(Protocol):
    """Sends batches of line-protocol lines to one server."""

    name: str

    def send(self, lines: Sequence[str]) -> None:
        """Deliver ``lines`` or raise a ``DeliveryError`` subclass."""
        ...

    def check(self) -> str:
        """Verify the connection and credentials (for ``doctor``); raise DeliveryError."""
        ...

    def close(self) -> None: ...
