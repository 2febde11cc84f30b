"""Prometheus scraping: the exposition parser, and polls against a real http.server."""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Iterator

import pytest

from agent.config import ScrapeConfig
from agent.httpclient.testing import HttpTestServer, Reply
from agent.units import PrometheusScraper, UnitCounter, parse_exposition


class Target:
    """An application's /metrics endpoint (the shipped test double) whose text and status
    the test changes."""

    def __init__(self) -> None:
        self.server = HttpTestServer()
        self.url = f"{self.server.url}/metrics"
        self._text, self._status = "", 200
        self._serve()

    @property
    def text(self) -> str:
        return self._text

    @text.setter
    def text(self, value: str) -> None:
        self._text = value
        self._serve()

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        self._status = value
        self._serve()

    def _serve(self) -> None:
        content_type = "text/plain; version=0.0.4; charset=utf-8"
        self.server.route("/metrics", Reply(self._text, self._status, content_type))

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target()
    yield t
    t.close()


@pytest.fixture
def counter() -> UnitCounter:
    return UnitCounter({"web": "request"})


def scraper(
    url: str,
    counter: UnitCounter,
    metric: str = "http_requests_total",
    labels: dict[str, str] | None = None,
    interval_s: float = 15.0,
) -> PrometheusScraper:
    config = ScrapeConfig(
        app="web", url=url, metric=metric, labels=labels or {}, interval_s=interval_s
    )
    return PrometheusScraper(config, counter, "request", timeout_s=2.0)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- polling -----------------------------------------------------------------------


def test_first_poll_is_the_baseline_then_deltas(target: Target, counter: UnitCounter) -> None:
    s = scraper(target.url, counter)
    target.text = "# TYPE http_requests_total counter\nhttp_requests_total 100\n"
    assert s.poll() == 0.0
    assert counter.take() == {}
    target.text = "http_requests_total 130\n"
    assert s.poll() == 30.0
    target.text = "http_requests_total 130\n"
    assert s.poll() == 0.0
    target.text = "http_requests_total 131.5\n"
    assert s.poll() == 1.5
    assert counter.take() == {"web": 31.5}
    assert s.last_value == 131.5 and s.last_error is None


def test_label_filter_sums_matching_series(target: Target, counter: UnitCounter) -> None:
    s = scraper(target.url, counter, labels={"handler": "/api"})
    target.text = (
        'http_requests_total{handler="/api",code="200"} 10\n'
        'http_requests_total{handler="/api",code="500"} 1\n'
        'http_requests_total{handler="/health",code="200"} 1000\n'
    )
    s.poll()
    target.text = (
        'http_requests_total{handler="/api",code="200"} 15\n'
        'http_requests_total{handler="/api",code="500"} 3\n'
        'http_requests_total{handler="/health",code="200"} 5000\n'
    )
    assert s.poll() == 7.0
    assert counter.take() == {"web": 7.0}


def test_total_suffix_convention(target: Target, counter: UnitCounter) -> None:
    s = scraper(target.url, counter, metric="http_requests")
    target.text = (
        "# TYPE http_requests counter\nhttp_requests_total 5\nhttp_requests_created 1.7e9\n"
    )
    s.poll()
    target.text = "http_requests_total 9\nhttp_requests_created 1.7e9\n"
    assert s.poll() == 4.0


def test_exact_name_wins_over_total_suffix(target: Target, counter: UnitCounter) -> None:
    s = scraper(target.url, counter, metric="jobs")
    target.text = "jobs 1\njobs_total 100\n"
    s.poll()
    target.text = "jobs 3\njobs_total 300\n"
    assert s.poll() == 2.0


def test_counter_reset_counts_the_new_value(target: Target, counter: UnitCounter) -> None:
    s = scraper(target.url, counter)
    target.text = "http_requests_total 500\n"
    s.poll()
    target.text = "http_requests_total 7\n"  # the app restarted and served 7 since
    assert s.poll() == 7.0
    target.text = "http_requests_total 10\n"
    assert s.poll() == 3.0
    assert counter.take() == {"web": 10.0}


def test_each_series_is_followed_on_its_own(target: Target, counter: UnitCounter) -> None:
    s = scraper(target.url, counter)
    target.text = 'http_requests_total{code="200"} 100\n'
    s.poll()
    # a new series appears (counted from 0) while the old one grows
    target.text = 'http_requests_total{code="200"} 110\nhttp_requests_total{code="404"} 2\n'
    assert s.poll() == 12.0
    # one series resets while the other grows: the sum fell, yet 3 + 1 were served
    target.text = 'http_requests_total{code="200"} 3\nhttp_requests_total{code="404"} 3\n'
    assert s.poll() == 4.0


def test_metric_missing_is_logged_once(
    target: Target, counter: UnitCounter, caplog: pytest.LogCaptureFixture
) -> None:
    s = scraper(target.url, counter)
    target.text = "other_metric 1\n"
    with caplog.at_level(logging.DEBUG, logger="sci_agent.scrape"):
        for _ in range(3):
            assert s.poll() == 0.0
    assert len(warnings(caplog)) == 1
    assert "metric 'http_requests_total' not found" in warnings(caplog)[0]
    assert s.errors == 3 and s.last_error is not None
    target.text = "http_requests_total 40\n"  # appears: the first success is the baseline
    assert s.poll() == 0.0
    target.text = "http_requests_total 42\n"
    assert s.poll() == 2.0 and s.last_error is None


def test_no_series_with_the_labels(
    target: Target, counter: UnitCounter, caplog: pytest.LogCaptureFixture
) -> None:
    s = scraper(target.url, counter, labels={"code": "200"})
    target.text = 'http_requests_total{code="500"} 1\n'
    assert s.poll() == 0.0
    assert (
        "no series of 'http_requests_total' has the labels {'code': '200'}" in warnings(caplog)[0]
    )


def test_failed_polls_keep_the_previous_value(
    target: Target, counter: UnitCounter, caplog: pytest.LogCaptureFixture
) -> None:
    s = scraper(target.url, counter)
    target.text = "http_requests_total 10\n"
    s.poll()
    target.status = 500
    assert s.poll() == 0.0
    assert s.poll() == 0.0
    target.text = "http_requests_total{ broken\n"
    target.status = 200
    assert s.poll() == 0.0
    target.text = "http_requests_total 25\n"
    assert s.poll() == 15.0  # nothing lost across the failures
    messages = warnings(caplog)
    assert len(messages) == 2
    assert "HTTP 500" in messages[0] and "line 1:" in messages[1]


def test_target_down_never_raises(counter: UnitCounter, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = scraper(f"http://127.0.0.1:{port}/metrics", counter)
    assert s.poll() == 0.0
    assert s.poll() == 0.0
    assert s.last_error is not None and "cannot reach the target" in s.last_error
    assert len(warnings(caplog)) == 1


def test_nan_series_are_skipped(target: Target, counter: UnitCounter) -> None:
    s = scraper(target.url, counter)
    target.text = 'http_requests_total{a="1"} 1\nhttp_requests_total{a="2"} NaN\n'
    s.poll()
    target.text = 'http_requests_total{a="1"} 4\nhttp_requests_total{a="2"} +Inf\n'
    assert s.poll() == 3.0
    target.text = "http_requests_total NaN\n"
    assert s.poll() == 0.0 and "NaN or infinite" in (s.last_error or "")


def test_background_thread_polls_until_stopped(target: Target, counter: UnitCounter) -> None:
    target.text = "http_requests_total 1\n"
    s = scraper(target.url, counter, interval_s=0.05)
    s.start()
    try:
        deadline = time.monotonic() + 5
        while s.last_value is None:  # the baseline poll has finished
            assert time.monotonic() < deadline
            time.sleep(0.01)
        target.text = "http_requests_total 6\n"
        while counter.totals() != {"web": 5.0}:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        s.stop()
    polls = s.polls
    time.sleep(0.15)
    assert s.polls == polls


# -- parser ------------------------------------------------------------------------


def test_parse_full_exposition() -> None:
    text = (
        "# HELP http_requests_total The total number of HTTP requests.\n"
        "# TYPE http_requests_total counter\n"
        'http_requests_total{method="post",code="200"} 1027 1395066363000\n'
        'http_requests_total{method="post",code="400"}    3 1395066363000\n'
        "\n"
        "# Escaping in label values:\n"
        'msdos_file_access_time_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9\n'  # noqa: E501
        "metric_without_timestamp_and_labels 12.47\n"
        'something_weird{problem="division by zero"} +Inf -3982045\n'
        "negative_inf -Inf\n"
        "not_a_number NaN\n"
        '  spaced { a = "1" , b="2", } 5\n'
        "# EOF\n"
    )
    samples = parse_exposition(text)
    names = [name for name, _, _ in samples]
    assert names == [
        "http_requests_total",
        "http_requests_total",
        "msdos_file_access_time_seconds",
        "metric_without_timestamp_and_labels",
        "something_weird",
        "negative_inf",
        "not_a_number",
        "spaced",
    ]
    assert samples[0] == ("http_requests_total", {"method": "post", "code": "200"}, 1027.0)
    assert samples[2][1] == {"path": "C:\\DIR\\FILE.TXT", "error": 'Cannot find file:\n"FILE.TXT"'}
    assert samples[3] == ("metric_without_timestamp_and_labels", {}, 12.47)
    assert samples[4][2] == math.inf and samples[5][2] == -math.inf
    assert math.isnan(samples[6][2])
    assert samples[7] == ("spaced", {"a": "1", "b": "2"}, 5.0)


def test_parse_openmetrics_extras() -> None:
    text = (
        'foo_total{a="b"} 17.0 1520879607.789 # {trace_id="KOO5S4vxi0o"} 0.67\n'
        '{"my.dotted.metric", env="prod"} 2\n'
        'empty{} 3\ncommas_in_value{x="a,b}c"} 4\n'
    )
    assert parse_exposition(text) == [
        ("foo_total", {"a": "b"}, 17.0),
        ("my.dotted.metric", {"env": "prod"}, 2.0),
        ("empty", {}, 3.0),
        ("commas_in_value", {"x": "a,b}c"}, 4.0),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [  # prometheus_client's own words
        ("metric", "could not convert string to float: 'metric'"),
        ("metric abc", "'abc'"),
        ("metric 1_000", "Invalid value: '1_000'"),
        ("metric 1 later", "'later'"),
        ('metric{a="1" 2', "could not convert"),
        ('metric{a="1} 2', "could not convert"),
        ("metric{a=1} 2", "Invalid labels: a=1"),
        ('metric{a="1",a="2"} 2', "Invalid labels"),
        ('metric{1a="x"} 2', "Invalid labels"),
        ("9metric 2", "invalid metric name"),
        ("metric{", "could not convert"),
    ],
)
def test_parse_errors_name_the_line(line: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"line 2: ") as info:
        parse_exposition(f"ok 1\n{line}\n")
    assert reason in str(info.value) and repr(line) in str(info.value)


def test_scrape_sends_one_user_agent_and_no_proxy(
    target: Target, counter: UnitCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # a proxy that would refuse
    target.text = "http_requests_total 1\n"
    s = scraper(target.url, counter)
    assert s.poll() == 0.0 and s.last_error is None
    (got,) = target.server.hits("/metrics")
    assert got.headers["user-agent"].startswith("sci-agent/")
    assert got.headers["accept"].startswith("text/plain;version=0.0.4")
