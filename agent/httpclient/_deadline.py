"""Connections whose every step ends by one monotonic deadline.

A socket timeout alone bounds each read, so a server trickling one byte a second would
hold the caller forever. Here connecting, the TLS handshake, every send and every receive
(status line, headers, body) waits at most for what is left until the deadline, and the
request fails once it has passed. Name resolution and a proxy's CONNECT answer are
bounded by the OS and by the time left per read.
"""

from __future__ import annotations

import functools
import http.client
import io
import os
import socket
import ssl
import time
import urllib.request
from typing import Any


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline``; ``TimeoutError`` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """Reads a socket with each receive bounded by the time left until ``deadline``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._raw = sock.makefile("rb", buffering=0)  # keeps the socket open until closed

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(remaining(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _response_class(deadline: float) -> type[http.client.HTTPResponse]:
    """An ``HTTPResponse`` reading its status line, headers and body by ``deadline``."""

    class DeadlineResponse(http.client.HTTPResponse):
        def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
            super().__init__(sock, *args, **kwargs)
            self.fp.close()  # the plain reader: replaced before anything is read
            self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))

    return DeadlineResponse


class _Deadline:
    """What both connections share: a monotonic ``deadline`` for everything they do."""

    sock: Any  # as http.client declares it
    deadline: float

    def _set_deadline(self, deadline: float) -> None:
        self.deadline = deadline
        self.response_class = _response_class(deadline)

    def send(self, data: Any) -> None:
        if self.sock is not None:
            self.sock.settimeout(remaining(self.deadline))
        super().send(data)  # type: ignore[misc]


class _HttpConnection(_Deadline, http.client.HTTPConnection):
    """Connects, sends and reads by ``deadline`` (a monotonic time)."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_deadline(deadline)

    def connect(self) -> None:
        self.timeout = remaining(self.deadline)
        super().connect()


class _HttpsConnection(_Deadline, http.client.HTTPSConnection):
    """``_HttpConnection`` over TLS: the handshake too ends by ``deadline``."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_deadline(deadline)

    def connect(self) -> None:
        self.timeout = remaining(self.deadline)
        http.client.HTTPConnection.connect(self)  # TCP (and a proxy's tunnel)
        self.sock.settimeout(remaining(self.deadline))
        server_hostname = getattr(self, "_tunnel_host", None) or self.host
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)


class HttpHandler(urllib.request.HTTPHandler):
    """urllib's http handler with connections bounded by ``deadline``."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> Any:
        del http_class
        connection = functools.partial(_HttpConnection, deadline=self.deadline)
        return super().do_open(connection, req, **kwargs)


def tls_context(verify: bool) -> ssl.SSLContext:
    """A context shared by every request with the same CA settings, made on first use:
    loading the CA store takes ~0.1 s, too much for each request (a CA added to the
    system store is seen after a restart; ``SSL_CERT_FILE``/``SSL_CERT_DIR`` at once)."""
    return _tls_context(verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _tls_context(verify: bool, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    del cert_file, cert_dir  # the cache key: create_default_context reads them itself
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class HttpsHandler(urllib.request.HTTPSHandler):
    """urllib's https handler bounded by ``deadline``, verifying certificates or not."""

    def __init__(self, deadline: float, verify: bool = True) -> None:
        super().__init__()
        self.deadline = deadline
        self.verify = verify

    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> Any:
        del http_class
        connection = functools.partial(_HttpsConnection, deadline=self.deadline)
        kwargs["context"] = tls_context(self.verify)
        return super().do_open(connection, req, **kwargs)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hands a 3xx back as an answer instead of following it (a POST must stay a POST)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs
        return None
