"""InfluxDB sinks against real servers: influxd 1.x (v1) and VictoriaMetrics (v2 API).

Values are read back from the server and compared with the points sent; the exact
requests (headers, query, gzip body) and the error classification are checked
against a loopback ``CaptureServer``.
"""

from __future__ import annotations

import gzip
import math
import uuid
from base64 import b64encode
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from agent.attribution import attribute
from agent.config import InfluxConfig, validate_influx
from agent.records import (
    ComponentReading,
    CpuActivity,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
    SciRecord,
)
from devtools.servers import CaptureServer, InfluxdServer, VictoriaMetricsServer, free_port
from exporters.delivery import AuthError, DeliveryError, RejectedError, RetryableError
from exporters.influxdb_v1 import InfluxV1Sink
from exporters.influxdb_v2 import InfluxV2Sink
from exporters.points import Point, interval_points

# Recent (inside VictoriaMetrics' retention), with milliseconds that must survive.
END = datetime.now(UTC).replace(microsecond=123_000) - timedelta(minutes=10)
TOKEN = "tok-3x4mpl3-s3cr3t"


def interval(end: datetime = END) -> IntervalResult:
    """A real attribution result, with intensity and SCI rows, awkward names and floats."""
    procs = [
        ProcessActivity(i, i, f"p{i}", f"app{i % 3}", i * 7, (i * 37) << 20) for i in range(1, 26)
    ]
    procs.append(ProcessActivity(99, 99, "web worker,1=x", "app0", 500, 5 << 20))
    readings = [
        ComponentReading("cpu0", "cpu", "rapl", 50.0 / 3),
        ComponentReading("dram0", "dram", "rapl", 10.1),
    ]
    busy = sum(p.cpu_ticks for p in procs) + 11
    result = attribute(
        "h1",
        end - timedelta(seconds=5),
        end,
        readings,
        CpuActivity(busy, busy * 3, 2),
        procs,
        1 << 34,
    )
    return replace(
        result,
        intensity=IntensityValue("FR", 56.7, "static", "average", end, fallback=True),
        sci=(
            SciRecord("app0", "request", 12.0, 1e-6 / 3, 56.7, 0.1 / 3, 0.0125, 0.0037),
            SciRecord("app1", None, 0.0, 2e-6, 56.7, 0.000113, 0.0125, None),
        ),
    )


def points(top_n: int = 5) -> list[Point]:
    return interval_points(interval(), top_n)


def lines(pts: list[Point]) -> list[str]:
    return [p.to_line() for p in pts]


# ---------------------------------------------------------------- v1: real influxd


def v1_config(server: InfluxdServer, **overrides: object) -> InfluxConfig:
    values: dict[str, object] = {
        "enabled": True,
        "url": server.url,
        "api": "v1",
        "database": server.database,
        "username": server.username,
        "password": server.password,
        "timeout_s": 5.0,
    }
    values.update(overrides)
    cfg = InfluxConfig(**values)  # type: ignore[arg-type]
    validate_influx(cfg)
    return cfg


def fresh_database(server: InfluxdServer) -> str:
    name = f"t_{uuid.uuid4().hex[:10]}"
    server.create_database(name)
    return name


def by_status(cases: Sequence[tuple[object, ...]]) -> list[object]:
    """Parameter sets named by their status code."""
    return [pytest.param(*case, id=str(case[0])) for case in cases]


def assert_stored(server: InfluxdServer, db: str, sent: list[Point]) -> None:
    """Every point is in ``db`` exactly once, tags, fields and ms timestamp intact."""
    by_measurement: dict[str, list[Point]] = defaultdict(list)
    for p in sent:
        by_measurement[p.measurement].append(p)
    for measurement, pts in by_measurement.items():
        rows = server.rows(f'SELECT * FROM "{measurement}"', db)
        assert len(rows) == len(pts), f"{measurement}: {len(rows)} rows for {len(pts)} points"
        tag_keys = {k for p in pts for k, _ in p.tags}
        for p in pts:
            tags = {k: (v or None) for k, v in p.tags}  # an empty tag is not written
            found = [
                r
                for r in rows
                if r["time"] == p.time_ms and all(r.get(k) == tags.get(k) for k in tag_keys)
            ]
            assert len(found) == 1, f"{measurement} {tags}: {len(found)} matching rows"
            row = found[0]
            for key, value in p.fields:
                if isinstance(value, float) and not math.isfinite(value):
                    continue
                got = row[key]
                assert got == value, f"{measurement}.{key}: sent {value!r}, read {got!r}"
                assert isinstance(got, bool) == isinstance(value, bool), key


@pytest.mark.parametrize("use_gzip", [True, False], ids=["gzip", "plain"])
def test_v1_points_read_back_exactly(influxd: InfluxdServer, use_gzip: bool) -> None:
    db = fresh_database(influxd)
    sent = points()
    assert {p.measurement for p in sent} == {
        "host_energy",
        "app_energy",
        "process_energy",
        "grid_intensity",
        "sci",
    }
    sink = InfluxV1Sink(v1_config(influxd, database=db, gzip=use_gzip))
    sink.send(lines(sent))
    sink.close()
    assert_stored(influxd, db, sent)
    times = {r["time"] for r in influxd.rows('SELECT * FROM "host_energy"', db)}
    assert times == {round(END.timestamp() * 1000)} and next(iter(times)) % 1000 == 123


def test_v1_pid_is_a_field_never_a_tag(influxd: InfluxdServer) -> None:
    db = fresh_database(influxd)
    InfluxV1Sink(v1_config(influxd, database=db)).send(lines(points()))
    tag_keys: dict[str, set[str]] = defaultdict(set)
    for row in influxd.rows("SHOW TAG KEYS", db):
        tag_keys[row["_name"]].add(row["tagKey"])
    assert all("pid" not in keys for keys in tag_keys.values())
    assert tag_keys["process_energy"] == {"host", "app", "process"}
    assert tag_keys["host_energy"] == {"host", "component", "source"}
    field_types = {
        r["fieldKey"]: r["fieldType"]
        for r in influxd.rows('SHOW FIELD KEYS FROM "process_energy"', db)
    }
    assert field_types["pid"] == "integer" and field_types["joules"] == "float"


def test_v1_replaying_a_batch_overwrites_it(influxd: InfluxdServer) -> None:
    db = fresh_database(influxd)
    sink = InfluxV1Sink(v1_config(influxd, database=db))
    sent = points()
    sink.send(lines(sent))
    first = influxd.rows("SELECT * FROM /.*/ GROUP BY * ORDER BY time", db)
    sink.send(lines(sent))
    sink.send(lines(sent[::-1]))  # a spool may replay in any order
    assert influxd.rows("SELECT * FROM /.*/ GROUP BY * ORDER BY time", db) == first
    assert_stored(influxd, db, sent)


def test_v1_check_reports_a_writable_database(influxd: InfluxdServer) -> None:
    status = InfluxV1Sink(v1_config(influxd)).check()
    assert "InfluxDB 1." in status and 'database "sci" writable as admin' in status
    assert influxd.password not in status


def test_v1_wrong_password_is_an_auth_error(influxd: InfluxdServer) -> None:
    sink = InfluxV1Sink(v1_config(influxd, password="wrong-pass-123"))
    for call in (lambda: sink.send(lines(points())), sink.check):
        with pytest.raises(AuthError) as err:
            call()
        message = str(err.value)
        assert message.startswith("influxdb: 401 Unauthorized")
        assert "check [influxdb] username/password" in message
        assert "wrong-pass-123" not in message and influxd.password not in message


def test_v1_missing_credentials_and_missing_privilege_are_auth_errors(
    influxd: InfluxdServer,
) -> None:
    anonymous = InfluxV1Sink(v1_config(influxd, username=None, password=None))
    with pytest.raises(AuthError, match=r"requires credentials: set \[influxdb\] username"):
        anonymous.send(lines(points()))
    influxd.create_user("reader", "reader-pw", "READ")
    reader = InfluxV1Sink(v1_config(influxd, username="reader", password="reader-pw"))
    with pytest.raises(
        AuthError, match=r"403 Forbidden .*not authorized to write.*WRITE privilege"
    ):
        reader.check()


def test_v1_field_type_conflict_is_rejected_with_the_server_message(
    influxd: InfluxdServer,
) -> None:
    db = fresh_database(influxd)
    sink = InfluxV1Sink(v1_config(influxd, database=db))
    sink.send(["host_energy,host=h1,component=cpu0,source=rapl joules=1.5 1700000000000"])
    with pytest.raises(RejectedError) as err:
        sink.send(['host_energy,host=h1,component=cpu0,source=rapl joules="x" 1700000001000'])
    assert "400 Bad Request: partial write: field type conflict" in str(err.value)
    with pytest.raises(RejectedError, match=r"unable to parse"):
        sink.send(["not line protocol"])


def test_v1_missing_database_or_retention_policy_is_retryable(influxd: InfluxdServer) -> None:
    missing = InfluxV1Sink(v1_config(influxd, database="nope"))
    for call in (lambda: missing.send(lines(points())), missing.check):
        with pytest.raises(RetryableError, match=r'database not found.*CREATE DATABASE "nope"'):
            call()
    no_rp = InfluxV1Sink(v1_config(influxd, retention_policy="week"))
    with pytest.raises(RetryableError, match=r"retention policy not found: week.*retention_policy"):
        no_rp.send(lines(points()))


def test_v1_stopped_server_is_retryable_and_delivery_resumes(influxd: InfluxdServer) -> None:
    db = fresh_database(influxd)
    sink = InfluxV1Sink(v1_config(influxd, database=db))
    before = points()
    sink.send(lines(before[:3]))
    influxd.stop()
    try:
        with pytest.raises(RetryableError, match=r"connection refused") as err:
            sink.send(lines(before[3:]))
        assert f"127.0.0.1:{influxd.port}" in str(err.value)
        with pytest.raises(RetryableError, match=r"connection refused"):
            sink.check()
    finally:
        influxd.start()
    sink.send(lines(before[3:]))  # the same instance: data and port kept
    assert_stored(influxd, db, before)


def test_v1_frozen_server_times_out_and_delivery_resumes(influxd: InfluxdServer) -> None:
    db = fresh_database(influxd)
    sink = InfluxV1Sink(v1_config(influxd, database=db, timeout_s=0.3))
    sent = points()
    influxd.pause()
    try:
        with pytest.raises(RetryableError, match=r"timed out after 0\.3s talking to 127\.0\.0\.1"):
            sink.send(lines(sent))
    finally:
        influxd.resume()
    sink.send(lines(sent))
    assert_stored(influxd, db, sent)


def test_v1_request_shape(capture_server: CaptureServer) -> None:
    cfg = InfluxConfig(
        enabled=True,
        url=capture_server.url + "/prefix/",
        api="v1",
        database="sci db",
        retention_policy="one year",
        username="agent",
        password="pa:ss w0rd",
    )
    sent = lines(points())
    InfluxV1Sink(cfg).send(sent)
    InfluxV1Sink(replace(cfg, gzip=False, username=None, password=None)).send(sent[:2])
    zipped, plain = capture_server.writes()
    assert zipped.method == "POST" and zipped.path == "/prefix/write"
    assert zipped.query == {"db": ["sci db"], "rp": ["one year"], "precision": ["ms"]}
    basic = b64encode(b"agent:pa:ss w0rd").decode()
    assert zipped.headers["Authorization"] == f"Basic {basic}"
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert gzip.decompress(zipped.body) == "\n".join(sent).encode()
    assert plain.headers["Authorization"] is None and plain.headers["Content-Encoding"] is None
    assert plain.body == "\n".join(sent[:2]).encode()
    assert plain.query == {"db": ["sci db"], "rp": ["one year"], "precision": ["ms"]}


STATUSES = [
    (400, '{"error":"unable to parse \'x\': missing fields"}', RejectedError, "missing fields"),
    (401, '{"error":"authorization failed"}', AuthError, "username/password"),
    (403, '{"error":"forbidden"}', AuthError, "WRITE privilege"),
    (404, '{"error":"database not found: \\"sci\\""}', RetryableError, "CREATE DATABASE"),
    (413, '{"error":"Request Entity Too Large"}', RejectedError, "larger than the server"),
    (422, '{"error":"unprocessable"}', RejectedError, "unprocessable"),
    (429, "", RetryableError, "retry after 30s"),
    (500, '{"error":"timeout"}', RetryableError, "500 Internal Server Error: timeout"),
    (503, "", RetryableError, "503 Service Unavailable"),
    (307, "", RetryableError, "redirected"),
]


@pytest.mark.parametrize(("status", "body", "error", "text"), by_status(STATUSES))
def test_v1_status_classification(
    capture_server: CaptureServer,
    status: int,
    body: str,
    error: type[DeliveryError],
    text: str,
) -> None:
    capture_server.reply(status, body, Retry_After="30", Location="http://127.0.0.1:1/write")
    cfg = InfluxConfig(
        url=capture_server.url, api="v1", database="sci", username="u", password="secret-pw"
    )
    with pytest.raises(error) as err:
        InfluxV1Sink(cfg).send(["m f=1 1"])
    assert type(err.value) is error and text in str(err.value)
    assert "secret-pw" not in str(err.value)


def test_v1_timeout_is_retryable(capture_server: CaptureServer) -> None:
    capture_server.reply(204)
    capture_server.answer.delay_s = 1.0
    cfg = InfluxConfig(url=capture_server.url, api="v1", database="sci", timeout_s=0.2)
    with pytest.raises(RetryableError, match=r"timed out after 0\.2s"):
        InfluxV1Sink(cfg).send(["m f=1 1"])


# ------------------------------------------------- v2: /api/v2/write, VictoriaMetrics


def v2_config(url: str, **overrides: object) -> InfluxConfig:
    values: dict[str, object] = {
        "enabled": True,
        "url": url,
        "token": TOKEN,
        "org": "acme",
        "bucket": "energy",
        "timeout_s": 5.0,
    }
    values.update(overrides)
    cfg = InfluxConfig(**values)  # type: ignore[arg-type]
    validate_influx(cfg)
    return cfg


def expected_samples(sent: list[Point]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """What VictoriaMetrics makes of points: ``<measurement>_<field>`` series per tags."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for p in sent:
        labels = frozenset((k, v) for k, v in p.tags if v != "")
        for key, value in p.fields:
            if isinstance(value, str):
                continue  # VictoriaMetrics keeps numbers only
            out[(f"{p.measurement}_{key}", labels)] = float(value)
    return out


def exported(
    server: VictoriaMetricsServer, time_ms: int
) -> dict[tuple[str, frozenset[tuple[str, str]]], list[float]]:
    series = server.export(
        '{__name__=~"(host_energy|app_energy|process_energy|grid_intensity|sci)_.+"}'
    )
    out: dict[tuple[str, frozenset[tuple[str, str]]], list[float]] = {}
    for s in series:
        labels = dict(s["metric"])
        name = labels.pop("__name__")
        labels.pop("db", None)
        values = [v for v, t in zip(s["values"], s["timestamps"], strict=True) if t == time_ms]
        if values:
            out[(name, frozenset(labels.items()))] = values
    return out


def test_v2_points_arrive_in_victoria_metrics(victoria_metrics: VictoriaMetricsServer) -> None:
    sent = points()
    sink = InfluxV2Sink(v2_config(victoria_metrics.url))
    sink.send(lines(sent))
    sink.send(lines(sent))  # a replay: deduplicated, as InfluxDB overwrites
    sink.close()
    want = expected_samples(sent)
    got = exported(victoria_metrics, sent[0].time_ms)
    assert set(got) == set(want)
    for key, value in want.items():
        assert len(got[key]) == 1, key
        # VictoriaMetrics keeps 12 significant decimal digits (relative error ≤ 1e-12)
        assert math.isclose(got[key][0], value, rel_tol=1e-11, abs_tol=1e-300), key


def test_v2_check_against_victoria_metrics(victoria_metrics: VictoriaMetricsServer) -> None:
    sink = InfluxV2Sink(v2_config(victoria_metrics.url, gzip=False))
    status = sink.check()
    sink.close()
    assert 'bucket "energy" in org "acme" writable' in status and TOKEN not in status


@pytest.mark.parametrize("use_gzip", [True, False], ids=["gzip", "plain"])
def test_v2_request_shape(capture_server: CaptureServer, use_gzip: bool) -> None:
    sent = lines(points())
    sink = InfluxV2Sink(v2_config(capture_server.url, gzip=use_gzip))
    sink.send(sent)
    sink.close()
    (write,) = capture_server.writes()
    assert write.method == "POST" and write.path == "/api/v2/write"
    assert write.query == {"org": ["acme"], "bucket": ["energy"], "precision": ["ms"]}
    assert write.headers["Authorization"] == f"Token {TOKEN}"
    body = gzip.decompress(write.body) if use_gzip else write.body
    assert write.headers["Content-Encoding"] == ("gzip" if use_gzip else None)
    assert body == "\n".join(sent).encode()


V2_STATUSES = [
    (400, '{"code":"invalid","message":"unable to parse \'x\'"}', RejectedError, "unable to parse"),
    (401, '{"code":"unauthorized","message":"unauthorized access"}', AuthError, "[influxdb] token"),
    (403, '{"code":"forbidden","message":"insufficient permissions"}', AuthError, "permission"),
    (
        404,
        '{"code":"not found","message":"bucket \\"energy\\" not found"}',
        RetryableError,
        "create the bucket",
    ),
    (413, '{"code":"request too large","message":"too large"}', RejectedError, "larger than"),
    (
        422,
        '{"code":"unprocessable entity","message":"outside retention"}',
        RejectedError,
        "retention",
    ),
    (429, "", RetryableError, "429 Too Many Requests"),
    (
        500,
        '{"code":"internal error","message":"boom"}',
        RetryableError,
        "500 Internal Server Error: boom",
    ),
    (503, "", RetryableError, "503 Service Unavailable"),
]


@pytest.mark.parametrize(("status", "body", "error", "text"), by_status(V2_STATUSES))
def test_v2_status_classification(
    capture_server: CaptureServer,
    status: int,
    body: str,
    error: type[DeliveryError],
    text: str,
) -> None:
    capture_server.reply(status, body)
    sink = InfluxV2Sink(v2_config(capture_server.url))
    with pytest.raises(error) as err:
        sink.send(["m f=1 1"])
    sink.close()
    assert type(err.value) is error and text in str(err.value)
    assert TOKEN not in str(err.value)


def test_v2_check_accepts_writing_requires_points_and_reports_auth(
    capture_server: CaptureServer,
) -> None:
    sink = InfluxV2Sink(v2_config(capture_server.url))
    capture_server.reply(400, '{"code":"invalid","message":"writing requires points"}')
    assert "InfluxDB capture-1.0" in sink.check()
    probe = capture_server.writes()[-1]
    assert (
        probe.query["bucket"] == ["energy"] and probe.headers["Authorization"] == f"Token {TOKEN}"
    )
    assert gzip.decompress(probe.body) == b""
    capture_server.reply(401, '{"code":"unauthorized","message":"unauthorized access"}')
    with pytest.raises(AuthError, match=r"401 Unauthorized \(unauthorized access\)"):
        sink.check()
    sink.close()


def test_v2_unreachable_server_is_retryable() -> None:
    sink = InfluxV2Sink(v2_config(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(RetryableError, match=r"connection refused"):
        sink.send(["m f=1 1"])
    with pytest.raises(RetryableError, match=r"connection refused"):
        sink.check()
    sink.close()


def test_v2_timeout_is_retryable(capture_server: CaptureServer) -> None:
    capture_server.answer.delay_s = 1.0
    sink = InfluxV2Sink(v2_config(capture_server.url, timeout_s=0.2))
    with pytest.raises(RetryableError, match=r"timed out after 0\.2s"):
        sink.send(["m f=1 1"])
    sink.close()


@pytest.mark.parametrize("sink_class", [InfluxV1Sink, InfluxV2Sink], ids=["v1", "v2"])
def test_an_untrusted_certificate_needs_verify_tls_off(
    tls_capture_server: CaptureServer, sink_class: type[InfluxV1Sink] | type[InfluxV2Sink]
) -> None:
    url = tls_capture_server.url
    if sink_class is InfluxV1Sink:
        cfg = InfluxConfig(url=url, api="v1", database="sci", timeout_s=5.0)
    else:
        cfg = InfluxConfig(url=url, org="o", bucket="b", timeout_s=5.0)
    strict = sink_class(cfg)
    with pytest.raises(RetryableError, match=r"certificate of 127\.0\.0\.1:\d+ not trusted"):
        strict.send(["m f=1 1"])
    strict.close()
    lax = sink_class(replace(cfg, verify_tls=False))
    lax.send(["m f=1 1"])
    assert "writable" in lax.check()
    lax.close()
    assert [r.path for r in tls_capture_server.writes()][:1] in (["/write"], ["/api/v2/write"])


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"api": "v3"}, "influxdb.api: must be v1 or v2"),
        ({"url": "127.0.0.1:8086"}, "influxdb.url: must start with http:// or https://"),
        ({"url": "http://:8086"}, "influxdb.url: no host"),
        ({"url": "http://h:99999"}, "influxdb.url: invalid port"),
        ({"url": "http://u:p@h:8086"}, "influxdb.url: put credentials in token"),
        ({"bucket": None}, 'influxdb.bucket: required by api = "v2"'),
        ({"org": ""}, 'influxdb.org: required by api = "v2"'),
        ({"database": "sci"}, 'influxdb.database: only used with api = "v1"'),
        ({"api": "v1", "token": None, "org": None, "bucket": None}, "influxdb.database: required"),
        ({"api": "v1", "database": "d"}, 'influxdb.token: only used with api = "v2"'),
        ({"batch_size": 0}, "influxdb.batch_size: must be 1 or more"),
        ({"timeout_s": 0.0}, "influxdb.timeout_s: must be greater than 0"),
        ({"flush_interval_s": -1.0}, "influxdb.flush_interval_s: must be greater than 0"),
        ({"top_processes": -1}, "influxdb.top_processes: must be 0 or more"),
    ],
)
def test_validate_influx_names_the_key(values: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"enabled": True, "token": "t", "org": "o", "bucket": "b"}
    cfg = InfluxConfig(**{**base, **values})  # type: ignore[arg-type]
    with pytest.raises(ValueError) as err:
        validate_influx(cfg)
    assert str(err.value).startswith(message)


def test_validate_influx_accepts_defaults_and_a_disabled_partial_section() -> None:
    validate_influx(InfluxConfig())
    validate_influx(InfluxConfig(enabled=False, api="v1"))
    validate_influx(InfluxConfig(enabled=True, api="v1", database="sci", username="u"))
    validate_influx(InfluxConfig(enabled=True, url="https://x.example/influx", org="o", bucket="b"))
    with pytest.raises(ValueError, match=r"^influxdb\.username: required when password is set"):
        validate_influx(InfluxConfig(api="v1", password="p"))
    with pytest.raises(ValueError, match=r"^agent\.influx\.bucket"):
        validate_influx(InfluxConfig(enabled=True, org="o"), prefix="agent.influx")
