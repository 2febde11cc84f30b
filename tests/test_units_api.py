"""The unit counter and the local HTTP endpoint, against a real server on loopback."""

from __future__ import annotations

import http.client
import json
import logging
import math
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import AppRule, Config, HttpConfig
from agent.httpserver import Request, Response, json_response
from agent.units import LocalApi, UnitCounter, UnitError, app_units
from agent.units.counter import MAX_COUNT

UNITS = {"web": "request", "llm": "token"}
JSON = {"Content-Type": "application/json"}


def call(
    api: LocalApi,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request on a fresh connection: status, decoded JSON body, headers."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        raw = reply.read()
        return reply.status, json.loads(raw) if raw else None, dict(reply.getheaders())
    finally:
        conn.close()


def post(api: LocalApi, payload: object, headers: dict[str, str] | None = None) -> Any:
    return call(api, "POST", "/v1/units", json.dumps(payload), {**JSON, **(headers or {})})


@pytest.fixture
def counter() -> UnitCounter:
    return UnitCounter(UNITS)


@pytest.fixture
def api(counter: UnitCounter) -> Iterator[LocalApi]:
    server = LocalApi(HttpConfig(listen="127.0.0.1:0"), counter)
    server.start()
    yield server
    server.stop()


# -- UnitCounter -------------------------------------------------------------------


def test_counter_take_resets_and_totals_keep_running(counter: UnitCounter) -> None:
    counter.add("web", "request", 2)
    counter.add("web", "request", 3.5)
    counter.add("llm", "token", 0)
    assert counter.take() == {"web": 5.5, "llm": 0.0}
    assert counter.take() == {}  # sparse: apps that counted nothing are absent
    counter.add("llm", "token", 7)
    assert counter.take() == {"llm": 7.0}
    assert counter.totals() == {"web": 5.5, "llm": 7.0}


@pytest.mark.parametrize(
    ("app", "unit", "count", "field", "message"),
    [
        ("x", "request", 1, "app", "app 'x' is not configured; configured apps with a unit: llm"),
        ("db", "request", 1, "app", "app 'db' has no unit configured"),
        ("web", "token", 1, "unit", "app 'web' counts 'request', not 'token'"),
        ("web", "request", -1, "count", "count must be 0 or more"),
        ("web", "request", True, "count", "count must be a number, got a boolean"),
        ("web", "request", "3", "count", "count must be a number, got a string"),
        ("web", "request", math.nan, "count", "count must be a finite number"),
        ("web", "request", math.inf, "count", "count must be a finite number"),
        ("web", "request", 10**400, "count", "count must be a finite number"),
        ("web", "request", MAX_COUNT * 2, "count", "count must be at most"),
    ],
)
def test_counter_rejects_with_field(
    app: str, unit: str, count: Any, field: str, message: str
) -> None:
    counter = UnitCounter({**UNITS, "db": None})
    with pytest.raises(UnitError) as info:
        counter.add(app, unit, count)
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert message in str(info.value)
    assert counter.totals() == {} and counter.take() == {}


def test_counter_batch_is_all_or_nothing(counter: UnitCounter) -> None:
    with pytest.raises(UnitError) as info:
        counter.add_many([("web", "request", 1), ("llm", "token", -2)])
    assert info.value.index == 1
    assert counter.totals() == {}


def test_counter_is_thread_safe(counter: UnitCounter) -> None:
    taken: list[float] = []

    def adder() -> None:
        for _ in range(2000):
            counter.add("web", "request", 1)

    def taker() -> None:
        for _ in range(200):
            taken.append(counter.take().get("web", 0.0))

    threads = [threading.Thread(target=adder) for _ in range(8)] + [threading.Thread(target=taker)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken.append(counter.take().get("web", 0.0))
    assert sum(taken) == 16000 == counter.totals()["web"]


def test_app_units_lists_rules_with_a_unit() -> None:
    cfg = Config(
        apps=(
            AppRule("web", exe="gunicorn", unit="request"),
            AppRule("db", exe="postgres"),
            AppRule("llm", exe="vllm", unit="token"),
        )
    )
    assert app_units(cfg) == {"web": "request", "llm": "token"}


# -- POST /v1/units: accepted ------------------------------------------------------


def test_single_report_accepted(api: LocalApi, counter: UnitCounter) -> None:
    status, body, _ = post(api, {"app": "web", "unit": "request", "count": 12})
    assert (status, body) == (202, {"accepted": 1})
    assert counter.take() == {"web": 12.0}


def test_batch_accepted(api: LocalApi, counter: UnitCounter) -> None:
    batch = [
        {"app": "web", "unit": "request", "count": 3},
        {"app": "llm", "unit": "token", "count": 250.5},
        {"app": "web", "unit": "request", "count": 4},
    ]
    status, body, _ = post(api, batch)
    assert (status, body) == (202, {"accepted": 3})
    assert counter.take() == {"web": 7.0, "llm": 250.5}
    assert post(api, [])[:2] == (202, {"accepted": 0})


def test_content_type_with_charset_accepted(api: LocalApi, counter: UnitCounter) -> None:
    body = json.dumps({"app": "web", "unit": "request", "count": 1})
    headers = {"Content-Type": "Application/JSON; charset=UTF-8"}
    assert call(api, "POST", "/v1/units", body, headers)[0] == 202
    assert counter.take() == {"web": 1.0}


def test_keep_alive_connection_serves_several_requests(api: LocalApi) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        for _ in range(3):
            conn.request("POST", "/v1/units", '{"app":"web","unit":"request","count":1}', JSON)
            reply = conn.getresponse()
            assert reply.status == 202 and json.loads(reply.read()) == {"accepted": 1}
    finally:
        conn.close()
    assert api.counter.totals() == {"web": 3.0}


# -- POST /v1/units: rejected ------------------------------------------------------

GOOD = {"app": "web", "unit": "request", "count": 1}

BAD_BODIES: list[tuple[str, str | bytes, int, str | None, str]] = [
    # (id, body, status, field, text in the error)
    ("malformed", "{", 400, None, "body is not valid JSON: Expecting property name"),
    ("empty", "", 400, None, "body is not valid JSON: Expecting value at line 1 column 1"),
    ("not-utf8", b'{"app": "\xff"}', 400, None, "body is not valid UTF-8"),
    ("nan", '{"app":"web","unit":"request","count":NaN}', 400, None, "NaN is not allowed"),
    ("deep", "[" * 60000, 400, None, "body is not valid JSON"),
    ("huge-int", '{"app":"web","unit":"request","count":' + "9" * 5000 + "}", 400, None, "JSON"),
    ("scalar", "42", 400, None, "body must be a JSON object or an array of objects"),
    ("missing-count", '{"app":"web","unit":"request"}', 400, "count", "missing field 'count'"),
    ("missing-app", '{"unit":"request","count":1}', 400, "app", "missing field 'app'"),
    ("unknown-field", '{"app":"web","unit":"request","count":1,"cnt":2}', 400, "cnt", "unknown"),
    ("app-type", '{"app":7,"unit":"request","count":1}', 400, "app", "app must be a string"),
    ("unit-type", '{"app":"web","unit":null,"count":1}', 400, "unit", "unit must be a string"),
    ("count-str", '{"app":"web","unit":"request","count":"1"}', 400, "count", "a number"),
    ("count-bool", '{"app":"web","unit":"request","count":true}', 400, "count", "boolean"),
    ("count-neg", '{"app":"web","unit":"request","count":-1}', 400, "count", "0 or more"),
    ("count-inf", '{"app":"web","unit":"request","count":1e400}', 400, "count", "finite"),
    ("unknown-app", '{"app":"x","unit":"request","count":1}', 422, "app", "web"),
    ("wrong-unit", '{"app":"web","unit":"token","count":1}', 422, "unit", "counts 'request'"),
]


@pytest.mark.parametrize(
    ("body", "status", "field", "text"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_bad_body_rejected_and_counts_nothing(
    api: LocalApi,
    counter: UnitCounter,
    body: str | bytes,
    status: int,
    field: str | None,
    text: str,
) -> None:
    got, answer, headers = call(api, "POST", "/v1/units", body, JSON)
    assert got == status, answer
    assert headers["Content-Type"] == "application/json"
    assert text in answer["error"]
    assert answer.get("field") == field
    assert counter.totals() == {} and counter.take() == {}
    assert call(api, "GET", "/healthz")[:2] == (200, {"status": "ok"})


def test_unknown_app_message_names_configured_apps(api: LocalApi) -> None:
    status, answer, _ = post(api, {"app": "x", "unit": "request", "count": 1})
    assert status == 422
    assert answer == {
        "error": "app 'x' is not configured; configured apps with a unit: llm, web",
        "field": "app",
    }


def test_bad_item_rejects_the_whole_batch(api: LocalApi, counter: UnitCounter) -> None:
    batch = [GOOD, GOOD, {"app": "web", "unit": "request", "count": -5}]
    status, answer, _ = post(api, batch)
    assert status == 400
    assert answer == {
        "error": "item 2: count must be 0 or more, got -5",
        "field": "count",
        "index": 2,
    }
    status, answer, _ = post(api, [GOOD, "nope"])
    assert (status, answer["index"]) == (400, 1)
    status, answer, _ = post(api, [GOOD, {"app": "nope", "unit": "request", "count": 1}])
    assert (status, answer["field"], answer["index"]) == (422, "app", 1)
    assert counter.totals() == {}


@pytest.mark.parametrize(
    ("ctype", "text"),
    [
        (None, "header missing"),
        ("text/plain", "got 'text/plain'"),
        ("application/x-www-form-urlencoded", "must be application/json"),
        ("application/json; charset=latin-1", "charset must be utf-8"),
    ],
)
def test_wrong_content_type_is_415(
    api: LocalApi, counter: UnitCounter, ctype: str | None, text: str
) -> None:
    headers = {} if ctype is None else {"Content-Type": ctype}
    status, answer, _ = call(api, "POST", "/v1/units", json.dumps(GOOD), headers)
    assert status == 415 and text in answer["error"]
    assert counter.totals() == {}


def test_unknown_path_is_404_and_wrong_method_is_405(api: LocalApi) -> None:
    status, answer, _ = call(api, "GET", "/v2/nothing")
    assert status == 404 and "/v2/nothing" in answer["error"]
    status, answer, headers = call(api, "GET", "/v1/units")
    assert status == 405 and headers["Allow"] == "POST" and "GET" in answer["error"]
    status, _, headers = call(api, "DELETE", "/healthz")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, _, headers = call(api, "POST", "/healthz", "{}", JSON)
    assert status == 405
    assert call(api, "GET", "/healthz?verbose=1")[:2] == (200, {"status": "ok"})


def test_missing_content_length_is_411(api: LocalApi, counter: UnitCounter) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.putrequest("POST", "/v1/units")
    conn.putheader("Content-Type", "application/json")
    conn.endheaders()
    reply = conn.getresponse()
    assert reply.status == 411 and "Content-Length" in json.loads(reply.read())["error"]
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.request("POST", "/v1/units", iter([json.dumps(GOOD).encode()]), JSON)  # chunked
    reply = conn.getresponse()
    assert reply.status == 411 and "Transfer-Encoding" in json.loads(reply.read())["error"]
    conn.close()
    assert counter.totals() == {}


def test_invalid_content_length_is_400(api: LocalApi) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/units HTTP/1.1\r\nHost: x\r\nContent-Length: 1_0\r\n\r\n")
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 400 ") and b"invalid Content-Length" in answer


def test_oversized_body_is_413_without_reading_it(api: LocalApi, counter: UnitCounter) -> None:
    # Headers only: the answer comes although no body byte is ever sent.
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    conn.putrequest("POST", "/v1/units")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    reply = conn.getresponse()
    answer = json.loads(reply.read())
    assert reply.status == 413 and "65536-byte limit" in answer["error"]
    conn.close()
    # A real body just over the limit, sent by urllib: the client still reads the 413.
    body = json.dumps([GOOD] * 2000).encode()
    assert len(body) > 65536
    request = urllib.request.Request(api.url + "/v1/units", body, JSON, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 413
    info.value.close()
    assert counter.totals() == {}
    assert call(api, "GET", "/healthz")[0] == 200


def test_expect_100_continue_refused_early_when_too_large(api: LocalApi) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/units HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 413 ")


def test_garbage_request_line_gets_json_error(api: LocalApi) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"NOT AN HTTP REQUEST AT ALL\r\n\r\n")
        answer = sock.makefile("rb").read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and "error" in json.loads(body)
    assert call(api, "GET", "/healthz")[0] == 200


# -- bearer token ------------------------------------------------------------------


def test_token_required_accepted_and_wrong(counter: UnitCounter) -> None:
    api = LocalApi(HttpConfig(listen="127.0.0.1:0", token="s3cret"), counter)
    api.start()
    try:
        status, answer, headers = post(api, GOOD)
        assert status == 401 and "Authorization" in answer["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert post(api, GOOD, {"Authorization": "Bearer wrong"})[0] == 401
        assert post(api, GOOD, {"Authorization": "Basic s3cret"})[0] == 401
        assert post(api, GOOD, {"Authorization": "Bearer s3cret-and-more"})[0] == 401
        assert counter.totals() == {}
        assert post(api, GOOD, {"Authorization": "Bearer s3cret"})[:2] == (202, {"accepted": 1})
        assert post(api, GOOD, {"Authorization": "bearer s3cret"})[0] == 202
        assert counter.totals() == {"web": 2.0}
        assert call(api, "GET", "/healthz")[0] == 200  # health needs no token
    finally:
        api.stop()


# -- robustness and lifecycle -----------------------------------------------------


def test_handler_exception_is_500_logged_once_and_server_survives(
    api: LocalApi, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(request: Request) -> Response:
        raise RuntimeError("kaput")

    api.add_route("GET", "/boom", boom, auth=False)
    with caplog.at_level(logging.DEBUG, logger="sci_agent.http"):
        for _ in range(3):
            status, answer, _ = call(api, "GET", "/boom")
            assert status == 500 and answer == {"error": "internal error; see the agent log"}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "kaput" in errors[0].getMessage()
    assert call(api, "GET", "/healthz")[0] == 200


def test_added_route_is_served(api: LocalApi) -> None:
    api.add_route("GET", "/metrics", lambda r: json_response(200, {"path": r.path}), auth=False)
    assert call(api, "GET", "/metrics")[:2] == (200, {"path": "/metrics"})
    with pytest.raises(ValueError, match="already defined"):
        api.add_route("GET", "/metrics", lambda r: json_response(200, {}))


def test_requests_are_not_logged_to_stderr(
    api: LocalApi, capfd: pytest.CaptureFixture[str]
) -> None:
    call(api, "GET", "/healthz")
    call(api, "GET", "/missing")
    assert capfd.readouterr().err == ""


def test_non_loopback_without_token_warns(
    counter: UnitCounter, caplog: pytest.LogCaptureFixture
) -> None:
    for token, warned in ((None, True), ("t", False)):
        caplog.clear()
        api = LocalApi(HttpConfig(listen="0.0.0.0:0", token=token), counter)
        with caplog.at_level(logging.WARNING, logger="sci_agent.http"):
            api.start()
        try:
            assert api.url.startswith("http://127.0.0.1:")
            assert call(api, "GET", "/healthz")[0] == 200
        finally:
            api.stop()
        assert any("http.token is not set" in r.getMessage() for r in caplog.records) is warned


def test_loopback_does_not_warn_and_port_in_use_is_clear(
    api: LocalApi, counter: UnitCounter, caplog: pytest.LogCaptureFixture
) -> None:
    other = LocalApi(HttpConfig(listen=f"127.0.0.1:{api.port}"), counter)
    with pytest.raises(OSError, match=r"http.listen '127.0.0.1:\d+': cannot listen"):
        other.start()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_stop_releases_the_port(counter: UnitCounter) -> None:
    api = LocalApi(HttpConfig(listen="127.0.0.1:0"), counter)
    api.start()
    port = api.port
    api.stop()
    api.stop()
    again = LocalApi(HttpConfig(listen=f"127.0.0.1:{port}"), counter)
    again.start()
    try:
        assert call(again, "GET", "/healthz")[0] == 200
    finally:
        again.stop()


# -- property-based fuzzing --------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
reports = st.fixed_dictionaries(
    {
        "app": st.sampled_from(["web", "llm", "nope", "", 3]),
        "unit": st.sampled_from(["request", "token", "REQUEST", None]),
        "count": st.one_of(
            st.integers(min_value=-5, max_value=10**6),
            st.floats(min_value=-1.0, max_value=1e6),
            st.floats(),
            st.just("1"),
            st.booleans(),
        ),
    },
    optional={"extra": st.integers()},
)
payloads = json_values | reports | st.lists(reports, max_size=6)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", None]
)


class FuzzState:
    def __init__(self) -> None:
        self.counter = UnitCounter(UNITS)
        self.api = LocalApi(HttpConfig(listen="127.0.0.1:0", max_body_bytes=4096), self.counter)
        self.expected: dict[str, float] = {}

    def send(self, body: bytes, ctype: str | None) -> None:
        headers = {} if ctype is None else {"Content-Type": ctype}
        try:
            status, answer, _ = call(self.api, "POST", "/v1/units", body, headers)
        except (OSError, http.client.HTTPException, ValueError) as exc:  # pragma: no cover
            pytest.fail(f"no JSON answer for {body[:200]!r}: {exc!r}")
        assert 200 <= status < 300 or 400 <= status < 500, (status, answer, body[:200])
        assert isinstance(answer, dict)
        if status == 202:
            payload = json.loads(body)
            items = payload if isinstance(payload, list) else [payload]
            assert answer == {"accepted": len(items)}
            for item in items:
                self.expected[item["app"]] = self.expected.get(item["app"], 0.0) + float(
                    item["count"]
                )
        else:
            assert isinstance(answer.get("error"), str) and answer["error"]
        assert self.counter.totals() == self.expected


@pytest.fixture(scope="module")
def fuzz() -> Iterator[FuzzState]:
    state = FuzzState()
    state.api.start()
    yield state
    assert call(state.api, "GET", "/healthz")[0] == 200
    state.api.stop()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300), ctype=content_types)
def test_fuzz_random_bytes(fuzz: FuzzState, body: bytes, ctype: str | None) -> None:
    fuzz.send(body, ctype)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads, ctype=content_types)
def test_fuzz_random_json(fuzz: FuzzState, payload: object, ctype: str | None) -> None:
    fuzz.send(json.dumps(payload).encode(), ctype)
