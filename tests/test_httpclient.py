"""agent.httpclient against its shipped double, a real loopback server (no mocks of urllib)."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.httpclient
from agent.httpclient import HttpError, redact, redact_url, request, user_agent
from agent.httpclient.testing import HttpTestServer, Reply, http_test_server
from tests.server_fixtures import self_signed_certificate

SECRET = "s3cr3t-t0ken-value"


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with http_test_server() as s:
        yield s


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the block ends


def test_public_api_is_what_all_lists() -> None:
    public = {n for n in dir(agent.httpclient) if not n.startswith("_")}
    modules = {"testing"}  # a submodule, imported by this test
    assert public - modules - {"annotations"} == set(agent.httpclient.__all__)


def test_request_sends_method_headers_body_and_one_user_agent(server: HttpTestServer) -> None:
    server.route("/w", Reply({"ok": True}, status=201))
    body = gzip.compress(b"m f=1 1")
    response = request(
        "POST", server.url + "/w?db=x", headers={"X-Key": "v"}, body=body, timeout_s=2
    )
    assert response.status == 201 and response.ok and response.json() == {"ok": True}
    (got,) = server.hits("/w")
    assert (got.method, got.query, got.body) == ("POST", {"db": ["x"]}, body)
    assert got.headers["x-key"] == "v"
    assert got.headers["user-agent"] == user_agent()
    assert user_agent().startswith("sci-agent/") and user_agent()[len("sci-agent/") :]


def test_status_error_gives_the_servers_explanation_without_secrets(
    server: HttpTestServer,
) -> None:
    server.route("/a", Reply({"message": f"bad token {SECRET}"}, status=403))
    with pytest.raises(HttpError) as info:
        request("GET", f"{server.url}/a?token={SECRET}", secrets=[SECRET])
    err = info.value
    assert (err.kind, err.status) == ("status", 403)
    assert err.message == "HTTP 403 Forbidden: bad token ***"
    assert SECRET not in str(err) and "/a" not in str(err)


def test_status_error_from_plain_text_and_html(server: HttpTestServer) -> None:
    server.route("/t", Reply("database\n  is   locked", status=503, content_type="text/plain"))
    server.route("/h", Reply("<html>oops</html>", status=500, content_type="text/html"))
    with pytest.raises(HttpError, match=r"^HTTP 503 Service Unavailable: database is locked$"):
        request("GET", server.url + "/t")
    with pytest.raises(HttpError, match=r"^HTTP 500 Internal Server Error$"):
        request("GET", server.url + "/h")
    answer = request("GET", server.url + "/h", raise_for_status=False)
    assert answer.status == 500 and answer.text() == "<html>oops</html>"


def test_connection_refused_names_the_host() -> None:
    port = closed_port()
    with pytest.raises(HttpError) as info:
        request("GET", f"http://127.0.0.1:{port}/x?key={SECRET}", timeout_s=2)
    assert info.value.kind == "refused"
    assert info.value.message == f"cannot connect to 127.0.0.1:{port} (connection refused)"


def test_an_unresolvable_name_is_a_dns_error() -> None:
    with pytest.raises(HttpError) as info:
        request("GET", "http://no-such-host.invalid/x", timeout_s=5)
    assert info.value.kind == "dns"
    assert info.value.message.startswith("cannot resolve no-such-host.invalid (")


def test_the_timeout_bounds_the_whole_request(server: HttpTestServer) -> None:
    # one byte every 0.1 s: no single read waits long, only a whole-request deadline ends it
    server.route("/slow", Reply(b"x" * 100, trickle_s=0.1, trickle_body=True))
    start = time.monotonic()
    with pytest.raises(HttpError) as info:
        request("GET", server.url + "/slow", timeout_s=0.5)
    assert time.monotonic() - start < 1.5
    assert info.value.kind == "timeout"
    assert info.value.message.startswith("timed out after 0.5s talking to 127.0.0.1:")


def test_a_held_answer_times_out(server: HttpTestServer) -> None:
    server.route("/held", Reply({"late": 1}, hold=threading.Event()))
    with pytest.raises(HttpError, match=r"timed out after 0\.3s"):
        request("GET", server.url + "/held", timeout_s=0.3)


def test_an_answer_too_large_is_refused_or_cut(server: HttpTestServer) -> None:
    server.route("/big", Reply(b"y" * 5000, content_type="text/plain"))
    with pytest.raises(HttpError, match=r"^response larger than 1000 bytes$") as info:
        request("GET", server.url + "/big", max_response_bytes=1000)
    assert info.value.kind == "too-large"
    cut = request("GET", server.url + "/big", max_response_bytes=1000, truncate=True)
    assert cut.body == b"y" * 1000


def test_not_json_says_type_and_size(server: HttpTestServer) -> None:
    server.route("/j", Reply(b"\x00nope", content_type="text/plain"))
    with pytest.raises(HttpError, match=r"^response is not JSON \(text/plain, 5 bytes\)$"):
        request("GET", server.url + "/j").json()


def test_redirects_followed_or_handed_back(server: HttpTestServer) -> None:
    server.route("/old", Reply("", status=307, headers={"Location": "/new"}))
    server.route("/new", Reply({"here": True}))
    assert request("GET", server.url + "/old").json() == {"here": True}
    kept = request("POST", server.url + "/old", body=b"x", follow_redirects=False,
                   raise_for_status=False)  # fmt: skip
    assert kept.status == 307 and len(server.hits("/new")) == 1


def test_use_proxy_off_ignores_the_environment(
    server: HttpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    server.route("/m", Reply("up 1\n", content_type="text/plain"))
    with pytest.raises(HttpError, match="connection refused"):  # the proxy is dead
        request("GET", server.url + "/m", timeout_s=2)
    assert request("GET", server.url + "/m", use_proxy=False).text() == "up 1\n"


def test_tls_untrusted_then_verify_off(tmp_path: Path) -> None:
    server = HttpTestServer(default=Reply({"ok": 1}), tls=self_signed_certificate(tmp_path))
    try:
        with pytest.raises(HttpError) as info:
            request("GET", server.url + "/x", timeout_s=3)
        assert info.value.kind == "tls-certificate"
        assert info.value.message.startswith("TLS certificate of 127.0.0.1:")
        assert request("GET", server.url + "/x", verify_tls=False).json() == {"ok": 1}
    finally:
        server.close()


def test_plain_http_to_a_tls_server_is_a_clear_error(tmp_path: Path) -> None:
    server = HttpTestServer(tls=self_signed_certificate(tmp_path))
    try:
        with pytest.raises(HttpError) as info:
            request("GET", server.url.replace("https", "http") + "/x", timeout_s=3)
        assert info.value.kind in ("connection", "timeout")
        assert "127.0.0.1:" in info.value.message
    finally:
        server.close()


@pytest.mark.parametrize(
    "url", [f"ftp://user:{SECRET}@host/x", "file:///etc/hostname", "data:,x", "http://"]
)
def test_only_http_urls_are_opened(url: str) -> None:
    with pytest.raises(HttpError) as info:
        request("GET", url)
    assert info.value.kind == "url" and SECRET not in info.value.message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://u:pw@db:8086/x?q=1", "http://***@db:8086/x?q=1"),
        ("https://db:8086/write", "https://db:8086/write"),
        ("https://tok@hooks.example/a@b", "https://***@hooks.example/a@b"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_masks_long_secrets_whole_and_leaves_short_words() -> None:
    text = "token abcd1234 and abcd and the"
    assert redact(text, ["abcd", "abcd1234", "the", None, ""]) == "token *** and *** and the"
