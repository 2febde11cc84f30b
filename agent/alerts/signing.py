"""Standard Webhooks signing: the ``webhook-*`` headers a receiver verifies.

Per the Standard Webhooks specification (standardwebhooks.com): the signed content is
``{webhook-id}.{webhook-timestamp}.{body}``, the key is the base64 part of the
``whsec_…`` secret, and the signature is ``v1,`` followed by the base64 HMAC-SHA256.
``webhook-id`` is the notification's id, the same on every retry, so a receiver can
drop duplicates; ``webhook-timestamp`` is the attempt's Unix time in whole seconds, so
a receiver can refuse old replays (the libraries allow five minutes either way).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from agent.alerts.config import secret_key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "msg_id.timestamp.body">`` with the secret's key."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def webhook_headers(
    secret: str | None, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """``webhook-id`` and ``webhook-timestamp``, and ``webhook-signature`` with a secret."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers["webhook-signature"] = sign(secret, msg_id, timestamp, body)
    return headers
