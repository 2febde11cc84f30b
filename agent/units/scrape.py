"""Count an application's units from a Prometheus counter it already exposes.

Every ``interval_s`` the scraper GETs ``url``, parses the text exposition format,
sums the series of ``metric`` whose labels include the configured ``labels``, and
adds the increase since the previous poll to the unit counter:

- the first successful poll is the baseline and adds nothing;
- each series is followed on its own: a value lower than before is a counter reset
  and counts the new value; a series first seen after the baseline counts from 0
  (client libraries create labelled series on their first increment);
- metric ``http_requests`` also matches the series ``http_requests_total`` (the
  OpenMetrics counter convention) when no series is named exactly ``http_requests``;
- NaN and infinite samples are skipped.

A failed poll (connection, HTTP status, metric missing, unparsable text) adds
nothing, keeps the previous values, and is logged once per distinct message until
a poll succeeds again; nothing raises out of the background thread.
"""

from __future__ import annotations

import logging
import math
import threading

from prometheus_client.parser import text_string_to_metric_families

from agent.config import ScrapeConfig
from agent.httpclient import HttpError, request
from agent.units.counter import UnitCounter, UnitError

log = logging.getLogger("sci_agent.scrape")

Sample = tuple[str, dict[str, str], float]
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]

MAX_RESPONSE_BYTES = 16 << 20
_ACCEPT = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1"
_MAX_LOGGED = 50


def parse_exposition(text: str) -> list[Sample]:
    """Parse Prometheus text exposition into ``(name, labels, value)`` samples.

    The parsing is ``prometheus_client``'s: comments and blank lines are skipped,
    timestamps are read and ignored, ``NaN`` and ``±Inf`` are returned as floats. A
    malformed line raises ``ValueError`` naming the line number, like Prometheus
    failing the whole scrape.
    """
    try:
        return [
            (s.name, s.labels, float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    except (ValueError, IndexError, KeyError) as exc:  # the last two: the parser's slips
        raise _locate(text, exc) from None


def _locate(text: str, error: Exception) -> ValueError:
    """The parser's error for ``text`` with the number and text of the line at fault.

    Only a failed scrape pays for this: each sample line is parsed again on its own.
    """
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            for _ in text_string_to_metric_families(line):
                pass
        except (ValueError, IndexError, KeyError) as exc:
            return ValueError(f"line {number}: {_reason(exc)}: {line[:120]!r}")
    return ValueError(f"not Prometheus text format ({_reason(error)})")


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, ValueError) else f"{type(exc).__name__}: {text}"


class ScrapeError(Exception):
    """One failed poll; the message says why."""


class PrometheusScraper:
    """Polls one Prometheus counter and adds its increase to ``counter`` as ``unit``."""

    def __init__(
        self,
        config: ScrapeConfig,
        counter: UnitCounter,
        unit: str,
        timeout_s: float = 5.0,
    ) -> None:
        self.config = config
        self.counter = counter
        self.unit = unit
        self.timeout_s = timeout_s
        self.polls = 0
        self.errors = 0
        self.last_error: str | None = None
        self.last_value: float | None = None  # sum of the matching series at the last poll
        self._last: dict[SeriesKey, float] | None = None
        self._logged: set[str] = set()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> float:
        """Scrape once and count the increase since the previous poll; never raises."""
        with self._poll_lock:
            self.polls += 1
            try:
                series = self._select(parse_exposition(self._fetch()))
                delta, state = self._advance(series)
                if delta > 0:
                    self.counter.add(self.config.app, self.unit, delta)
                self._last = state
                self.last_value = sum(series.values())
            except (ScrapeError, ValueError) as exc:
                self._failed(str(exc) if not isinstance(exc, UnitError) else exc.message)
                return 0.0
            except Exception as exc:  # a bug must not stop the scraping thread
                self._failed(f"{type(exc).__name__}: {exc}")
                return 0.0
            self._succeeded()
            return delta

    def start(self) -> None:
        """Poll now (the baseline) and then every ``interval_s`` in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"sci-agent-scrape-{self.config.app}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a poll under way finishes first."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self.timeout_s + 1)

    def _run(self) -> None:
        self.poll()
        while not self._stop.wait(self.config.interval_s):
            self.poll()

    def _fetch(self) -> str:
        try:
            response = request(
                "GET",
                self.config.url,
                headers={"Accept": _ACCEPT},
                timeout_s=self.timeout_s,
                max_response_bytes=MAX_RESPONSE_BYTES,
                use_proxy=False,  # targets are reached directly, as Prometheus does
            )
        except HttpError as exc:
            if exc.status is not None or exc.kind == "too-large":
                raise ScrapeError(exc.message) from None
            raise ScrapeError(f"cannot reach the target: {exc.message}") from None
        return response.text()

    def _select(self, samples: list[Sample]) -> dict[SeriesKey, float]:
        """The finite series of the configured metric whose labels include ``labels``."""
        metric, wanted = self.config.metric, self.config.labels.items()
        names = {name for name, _, _ in samples}
        if metric in names:
            chosen = metric
        elif not metric.endswith("_total") and f"{metric}_total" in names:
            chosen = f"{metric}_total"
        else:
            raise ScrapeError(f"metric {metric!r} not found")
        series: dict[SeriesKey, float] = {}
        matched = 0
        for name, labels, value in samples:
            if name != chosen or not wanted <= labels.items():
                continue
            matched += 1
            if math.isfinite(value):
                series[(name, tuple(sorted(labels.items())))] = value
        if not matched:
            raise ScrapeError(f"no series of {chosen!r} has the labels {dict(wanted)}")
        if not series:
            raise ScrapeError(f"every matching series of {chosen!r} is NaN or infinite")
        return series

    def _advance(self, series: dict[SeriesKey, float]) -> tuple[float, dict[SeriesKey, float]]:
        """The increase since the previous poll (0 for the baseline), and the new state."""
        previous = self._last
        state = {**(previous or {}), **series}  # a vanished series keeps its last value
        if previous is None:
            return 0.0, state
        delta = 0.0
        for key, value in series.items():
            before = previous.get(key)
            if before is None or value < before:  # new series, or a counter reset
                delta += value
            else:
                delta += value - before
        return delta, state

    def _failed(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        if message in self._logged or len(self._logged) >= _MAX_LOGGED:
            log.debug("scrape %s %s: %s", self.config.app, self.config.url, message)
            return
        self._logged.add(message)
        log.warning("scrape %s %s: %s", self.config.app, self.config.url, message)

    def _succeeded(self) -> None:
        if self.last_error is not None:
            log.info("scrape %s %s: recovered", self.config.app, self.config.url)
        self.last_error = None
        self._logged.clear()
