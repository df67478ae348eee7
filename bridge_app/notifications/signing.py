"""Webhook signatures, in the style of Stripe's (and GitHub's ``sha256=``):

    Radical-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

A receiver recomputes the HMAC over the timestamp, a dot and the raw body with the
subscription's secret, compares in constant time, and refuses timestamps older than a few
minutes (replays). ``verify`` is that check; the SDK has the same (edge_agent.client.webhooks).
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Radical-Signature"
TOLERANCE = 300.0


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body`` sent at ``timestamp`` (now by default)."""
    t = int(time.time() if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = TOLERANCE, now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is recent enough."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))
