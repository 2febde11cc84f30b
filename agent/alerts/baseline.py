"""Each app's SCI over the trailing seven days, the reference of ``sci_change_pct``.

Read from the embedded store (the ``sci`` table the agent writes every interval) as
Σ carbon ÷ Σ units over (now − 7 days, now − window], so the window being judged is
not part of its own reference. One grouped query for every app, re-run at most every
``refresh_s`` per window length, on the alert thread (never the sampling loop's).
A store that cannot be read gives no baseline (the rules wait) and is logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from exporters.store_reader import StoreReadError, open_reader

log = logging.getLogger("sci_agent.alerts")

BASELINE_S = 7 * 86_400.0
REFRESH_S = 600.0


class SciBaseline:
    """Seven-day SCI per app from the store at ``path``, for one ``host``."""

    def __init__(
        self,
        path: str | Path,
        host: str,
        *,
        refresh_s: float = REFRESH_S,
        baseline_s: float = BASELINE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.host = host
        self.refresh_s = refresh_s
        self.baseline_s = baseline_s
        self._clock = clock
        self._cache: dict[float, tuple[float, Mapping[str, float]]] = {}  # window_s → (at, sci)
        self._failing: str | None = None

    def sci(self, app: str, window_s: float, now: float) -> float | None:
        """``app``'s SCI over the seven days before the window; None without units."""
        cached = self._cache.get(window_s)
        if cached is None or self._clock() - cached[0] >= self.refresh_s:
            cached = (self._clock(), self._query(window_s, now))
            self._cache[window_s] = cached
        return cached[1].get(app)

    def _query(self, window_s: float, now: float) -> Mapping[str, float]:
        end_ms = int((now - window_s) * 1000)
        start_ms = int((now - self.baseline_s) * 1000)
        if not self.path.exists():
            return {}
        try:
            with open_reader(self.path) as store:
                rows = store.sci_by_app(self.host, start_ms, end_ms)
        except StoreReadError as exc:
            message = exc.cause
            if self._failing != message:
                log.warning(
                    "alerts: cannot read the 7-day SCI baseline from %s: %s", self.path, message
                )
            self._failing = message
            return {}
        if self._failing is not None:
            log.info("alerts: the 7-day SCI baseline can be read again")
            self._failing = None
        return {app: carbon / units for app, carbon, units in rows if units and units > 0}
