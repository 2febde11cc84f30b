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

import http.client
import logging
import math
import re
import threading
import urllib.error
import urllib.request

from agent.config import ScrapeConfig
from agent.units.counter import UnitCounter, UnitError

log = logging.getLogger("sci_agent.scrape")

Sample = tuple[str, dict[str, str], float]
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]

MAX_RESPONSE_BYTES = 16 << 20
_ACCEPT = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1"
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_MAX_LOGGED = 50


def parse_exposition(text: str) -> list[Sample]:
    """Parse Prometheus text exposition into ``(name, labels, value)`` samples.

    Comments (``# HELP``, ``# TYPE``, ``# EOF``) and blank lines are skipped;
    timestamps and OpenMetrics exemplars are read and ignored; ``NaN`` and
    ``±Inf`` values are returned as floats. A malformed line raises ``ValueError``
    naming the line number, like Prometheus failing the whole scrape.
    """
    samples: list[Sample] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            samples.append(_parse_line(line))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}: {line[:120]!r}") from None
    return samples


def _parse_line(line: str) -> Sample:
    match = _METRIC_NAME.match(line)
    name = match.group() if match else ""
    pos = match.end() if match else 0
    labels: dict[str, str] = {}
    brace = _skip_spaces(line, pos)
    if brace < len(line) and line[brace] == "{":
        name, pos = _parse_labels(line, brace + 1, name, labels)
    if not name:
        raise ValueError("expected a metric name")
    if pos < len(line) and not line[pos].isspace():
        raise ValueError(f"unexpected {line[pos]!r} after the metric name")
    fields = line[pos:].split()
    if "#" in fields:  # OpenMetrics exemplar: value [timestamp] # {labels} value
        fields = fields[: fields.index("#")]
    if not fields:
        raise ValueError("missing value")
    if len(fields) > 2:
        raise ValueError("expected 'value [timestamp]'")
    value = _number(fields[0], "value")
    if len(fields) == 2:
        _number(fields[1], "timestamp")
    return name, labels, value


def _parse_labels(line: str, pos: int, name: str, labels: dict[str, str]) -> tuple[str, int]:
    """Parse ``label="value", ...}`` from ``pos``; return the metric name and the end."""
    while True:
        pos = _skip_spaces(line, pos)
        if pos >= len(line):
            raise ValueError("unterminated label set")
        if line[pos] == "}":
            return name, pos + 1
        if line[pos] == '"':  # a quoted name: the metric (UTF-8 names) or a label
            text, pos = _quoted(line, pos)
            pos = _skip_spaces(line, pos)
            if pos < len(line) and line[pos] != "=":
                if name:
                    raise ValueError("metric name given twice")
                name = text
                pos = _separator(line, pos)
                continue
            key = text
        else:
            match = _LABEL_NAME.match(line, pos)
            if not match:
                raise ValueError("expected a label name")
            key, pos = match.group(), match.end()
        pos = _skip_spaces(line, pos)
        if pos >= len(line) or line[pos] != "=":
            raise ValueError(f"expected '=' after label {key!r}")
        pos = _skip_spaces(line, pos + 1)
        if pos >= len(line) or line[pos] != '"':
            raise ValueError(f"expected a quoted value for label {key!r}")
        value, pos = _quoted(line, pos)
        if key in labels:
            raise ValueError(f"label {key!r} given twice")
        labels[key] = value
        pos = _separator(line, _skip_spaces(line, pos))


def _separator(line: str, pos: int) -> int:
    if pos < len(line) and line[pos] == ",":
        return pos + 1
    if pos < len(line) and line[pos] == "}":
        return pos
    raise ValueError("expected ',' or '}' in the label set")


def _quoted(line: str, pos: int) -> tuple[str, int]:
    """Read the string opening at ``line[pos] == '"'``, undoing ``\\\\ \\" \\n``."""
    out: list[str] = []
    i = pos + 1
    while i < len(line):
        char = line[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    raise ValueError("unterminated quoted string")


def _skip_spaces(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _number(token: str, what: str) -> float:
    if "_" in token:  # float() accepts 1_000; the exposition format does not
        raise ValueError(f"invalid {what} {token!r}")
    try:
        return float(token)
    except ValueError:
        raise ValueError(f"invalid {what} {token!r}") from None


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
        # Scrape targets are reached directly, as Prometheus does: no HTTP(S)_PROXY.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

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
        request = urllib.request.Request(
            self.config.url, headers={"Accept": _ACCEPT, "User-Agent": "sci-agent"}
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as reply:
                raw: bytes = reply.read(MAX_RESPONSE_BYTES + 1)
                charset: str = reply.headers.get_content_charset() or "utf-8"
        except urllib.error.HTTPError as exc:
            exc.close()
            raise ScrapeError(f"HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ScrapeError(f"cannot reach the target: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ScrapeError(f"{type(exc).__name__}: {exc or 'connection failed'}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ScrapeError(f"response larger than {MAX_RESPONSE_BYTES >> 20} MiB")
        try:
            return raw.decode(charset, "replace")
        except LookupError:
            return raw.decode("utf-8", "replace")

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
