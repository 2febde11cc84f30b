"""The one way to show a URL or a message that might hold a credential.

Standard library string work only, so that ``agent.config`` can use it without loading
the HTTP client (``agent.httpclient`` re-exports both functions).
"""

from __future__ import annotations

from collections.abc import Iterable

MIN_SECRET = 4  # shorter strings would mask ordinary words of a message


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``, for messages."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}{sep}***@{authority.rpartition('@')[2]}{slash}{path}"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with each secret (of ``MIN_SECRET`` characters or more) replaced by ***,
    longest first, so a secret that contains another is masked whole."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
