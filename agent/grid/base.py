"""The one interface every grid carbon intensity provider implements, and its error."""

from __future__ import annotations

from typing import Protocol

from agent.records import IntensityValue, Signal


class ProviderError(Exception):
    """A provider could not give a value; the message names the cause, never a credential."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message


class HttpStatusError(ProviderError):
    """The API answered with an HTTP error status (kept so callers can react to 401)."""

    def __init__(self, provider: str, message: str, status: int) -> None:
        super().__init__(provider, message)
        self.status = status


class Provider(Protocol):
    """Gives the grid carbon intensity of a zone.

    ``fetch`` returns the current value or raises ``ProviderError``; it may block on the
    network for up to the configured timeout, so only the chain's background refresh calls
    it. ``ttl_s`` is how long a fetched value stays current (``inf`` for local data);
    ``remote`` is false for providers that only read local data, which the chain fetches
    synchronously when it is built. ``forecast`` returns future values where the source
    has them; subclasses without one inherit the empty default.
    """

    name: str
    signal: Signal
    ttl_s: float
    remote: bool

    def fetch(self, zone: str) -> IntensityValue: ...

    def forecast(self, zone: str) -> list[IntensityValue]:
        """Future values, oldest first; none by default."""
        del zone
        return []
