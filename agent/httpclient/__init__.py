"""The one HTTP client of sci-agent (standard library only).

Every outgoing request (grid APIs, alert webhooks, Prometheus scrapes, InfluxDB writes
and queries, doctor's probe of a running agent) goes through ``request``:

- one user agent, ``sci-agent/<version>``;
- ``timeout_s`` is a deadline for the whole request (connect, TLS handshake, send,
  status line, headers, body), so a server trickling one byte a second cannot hold a
  caller past it;
- answers larger than ``max_response_bytes`` are refused (or cut, for callers that only
  keep an excerpt);
- one error type, ``HttpError``, whose message tells a user the cause (cannot resolve,
  connection refused, timed out, TLS, ``HTTP <status> <reason>: <the server's
  explanation>``), names the host but never the URL, and masks every secret given;
- ``redact_url`` and ``redact`` (from ``agent.redaction``): the one way to show a URL or
  a text that might hold a credential.

``agent.httpclient.testing`` ships the test double: a real loopback server with
scripted answers that records what it received.
"""

from agent.httpclient._client import (
    MAX_RESPONSE_BYTES,
    HttpError,
    Response,
    explanation,
    host_of,
    request,
    shorten,
    status_error,
    user_agent,
)
from agent.redaction import redact, redact_url

__all__ = [
    "MAX_RESPONSE_BYTES",
    "HttpError",
    "Response",
    "explanation",
    "host_of",
    "redact",
    "redact_url",
    "request",
    "shorten",
    "status_error",
    "user_agent",
]
