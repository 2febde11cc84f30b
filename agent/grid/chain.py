"""Providers tried in order, each value cached for its TTL, the builtin data as last resort.

The sampling loop only ever calls ``current()``, which reads the cache: it never blocks on
the network and never raises. A background thread (``start``/``stop``) calls ``refresh()``,
which walks the providers in order and stops at the first one with a current value:

- a provider whose value has lived less than ``REFRESH_AHEAD`` of its TTL is current;
- one that is due is fetched; on success it is cached and the walk stops, so a value is
  renewed before it expires;
- one that fails is skipped, and retried after a backoff (30 s doubling, at most its TTL
  or 10 minutes), so a dead API costs one timeout per retry, never one per cycle.

``current()`` returns, in this order: the value of the most preferred provider still
within its TTL; else the most recently fetched stale value (at most ``max_stale_s`` old);
else the last resort's value, computed once at construction (local data). Anything not
from the first provider of the chain is flagged ``fallback=True``. Providers after the
last resort (``builtin``) are never used, since it never fails.

Providers that read only local data (``remote = False``: static, csv) are fetched at
construction, so their value is there before the first cycle.

Every fetched value is checked before it is cached (``base.check_value``): an intensity
outside 0-5,000 gCO2e/kWh or not finite, or a time more than 15 minutes ahead of the
clock (8 days for a forecast), is that provider's error like any other, so an API
answering ``-500`` is logged and skipped and its value never reaches the formulas.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from agent.grid.base import MAX_FORECAST_AHEAD, Provider, ProviderError, check_value
from agent.grid.builtin import BuiltinProvider
from agent.records import IntensityValue, utc_now

log = logging.getLogger("sci_agent.grid")

#: A value is fetched again once it has lived this share of its provider's TTL.
REFRESH_AHEAD = 0.75
#: A stale value older than this gives way to the last resort's yearly average.
MAX_STALE_S = 6 * 3600.0
RETRY_MIN_S = 30.0
RETRY_MAX_S = 600.0
POLL_MIN_S = 1.0
POLL_MAX_S = 60.0


@dataclass(slots=True)
class _State:
    """One provider's cached value and failure count."""

    value: IntensityValue | None = None
    fetched_at: float = -math.inf
    failures: int = 0
    retry_at: float = -math.inf


class IntensityChain:
    """The grid intensity of one zone from an ordered list of providers (see the module)."""

    def __init__(
        self,
        providers: Sequence[Provider],
        zone: str,
        fallback_last: Provider | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_stale_s: float = MAX_STALE_S,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        """Raise ``ProviderError`` when the last resort has no value for ``zone``."""
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"a provider is listed twice: {names}")
        last = fallback_last if fallback_last is not None else BuiltinProvider()
        self._order = list(providers)
        if last.name in names:
            self._last = names.index(last.name)
        else:
            self._order.append(last)
            self._last = len(self._order) - 1
        self.zone = zone
        self._clock = clock
        self._now = now  # wall clock, for values timed in the future
        self._max_stale_s = max_stale_s
        self._states = {p.name: _State() for p in self._order}
        self._errors: dict[str, str] = {}
        self._logged: dict[str, str] = {}
        self._lock = threading.Lock()  # guards the states and errors; never held on I/O
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: provider → why its forecast failed, from the last ``forecast()`` call
        self.forecast_errors: dict[str, str] = {}
        self._last_value = self._order[self._last].fetch(zone)
        self.refresh(include_remote=False)

    # -- reading (the sampling loop) -------------------------------------------------------

    def current(self) -> IntensityValue:
        """The best cached value; never blocks on a provider and never raises."""
        now = self._clock()
        with self._lock:
            preferred = self._order[: self._last]
            for i, provider in enumerate(preferred):
                state = self._states[provider.name]
                if state.value is not None and now - state.fetched_at <= provider.ttl_s:
                    return _flag(state.value, i > 0)
            stale = [
                self._states[p.name]
                for p in preferred
                if self._states[p.name].value is not None
                and now - self._states[p.name].fetched_at <= self._max_stale_s
            ]
            if stale:
                newest = max(stale, key=lambda s: s.fetched_at).value
                assert newest is not None
                return _flag(newest, True)
        return _flag(self._last_value, self._last > 0)

    @property
    def last_errors(self) -> dict[str, str]:
        """Provider → its last error message, for providers whose last fetch failed."""
        with self._lock:
            return dict(self._errors)

    @property
    def providers(self) -> list[str]:
        """The providers' names, in order, the last resort included."""
        return [p.name for p in self._order[: self._last + 1]]

    # -- fetching --------------------------------------------------------------------------

    def refresh(self, *, force: bool = False, include_remote: bool = True) -> None:
        """Fetch what is due, in order, until one provider has a current value.

        ``force`` fetches every provider in turn until one succeeds, ignoring cached values
        and backoffs. Errors are recorded in ``last_errors`` and logged, never raised.
        """
        with self._refresh_lock:
            for provider in self._order[: self._last]:
                if provider.remote and not include_remote:
                    continue
                state = self._states[provider.name]
                now = self._clock()
                if not force:
                    age = now - state.fetched_at
                    if state.value is not None and age < provider.ttl_s * REFRESH_AHEAD:
                        return
                    if now < state.retry_at:
                        continue
                if self._fetch(provider, state):
                    return

    def forecast(self) -> list[IntensityValue]:
        """The first non-empty forecast of the chain (blocks on the network: CLI only).

        The providers that failed on the way are in ``forecast_errors``.
        """
        self.forecast_errors = {}
        for i, provider in enumerate(self._order[: self._last + 1]):
            try:
                now = self._now()
                values = [
                    check_value(v, now, MAX_FORECAST_AHEAD) for v in provider.forecast(self.zone)
                ]
            except Exception as exc:  # one provider's failure must not hide the next
                self.forecast_errors[provider.name] = _message(exc)
                self._log_once(f"{provider.name} forecast", _message(exc))
                continue
            if values:
                return [_flag(v, i > 0) for v in values]
        return []

    def _fetch(self, provider: Provider, state: _State) -> bool:
        try:
            value = check_value(provider.fetch(self.zone), self._now())
        except Exception as exc:  # a provider bug must not stop the refresh thread either
            message = _message(exc)
            with self._lock:
                state.failures += 1
                cap = max(RETRY_MIN_S, min(provider.ttl_s * REFRESH_AHEAD, RETRY_MAX_S))
                backoff = min(RETRY_MIN_S * 2 ** min(state.failures - 1, 16), cap)
                state.retry_at = self._clock() + backoff
                self._errors[provider.name] = message
            self._log_once(provider.name, message)
            return False
        with self._lock:
            state.value, state.fetched_at = value, self._clock()
            state.failures, state.retry_at = 0, -math.inf
            self._errors.pop(provider.name, None)
            recovered = self._logged.pop(provider.name, None) is not None
        if recovered:
            log.info("grid intensity provider %s works again", provider.name)
        return True

    def _log_once(self, key: str, message: str) -> None:
        with self._lock:
            repeated = self._logged.get(key) == message
            self._logged[key] = message
        if repeated:
            log.debug("grid intensity provider %s failed again: %s", key, message)
            return
        log.warning(
            "grid intensity provider %s failed: %s (falling back to the next provider; "
            "logged once per distinct error)",
            key,
            message,
        )

    # -- background refresh ----------------------------------------------------------------

    @property
    def poll_s(self) -> float:
        """How often the background thread looks for due values."""
        ttls = [p.ttl_s for p in self._order[: self._last] if math.isfinite(p.ttl_s)]
        if not ttls:
            return POLL_MAX_S
        return min(max(min(ttls) / 10, POLL_MIN_S), POLL_MAX_S)

    def start(self) -> None:
        """Refresh in a daemon thread, now and then every ``poll_s``."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sci-agent-grid", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread; a fetch in flight is abandoned after ``timeout_s`` (daemon)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # pragma: no cover - refresh records errors itself
                log.exception("grid intensity refresh failed")
            if self._stop.wait(self.poll_s):
                return


def _flag(value: IntensityValue, fallback: bool) -> IntensityValue:
    return dataclasses.replace(value, fallback=True) if fallback and not value.fallback else value


def _message(exc: Exception) -> str:
    if isinstance(exc, ProviderError):
        return exc.message
    return f"unexpected error: {type(exc).__name__}: {exc}"
