"""Notifications in the SDK: subscriptions (``bc.subscribe(...)``) and the check a webhook
receiver makes (:func:`verify_signature`).

    sub = bc.subscribe(target="webhook", url="https://example.org/hook", edges=["polaris"],
                       plugin="psij", topic="job_status", states=["COMPLETED", "FAILED"])
    secret = sub["secret"]          # shown once: keep it for the receiver

    # in the receiver, with the raw body and the Radical-Signature header:
    if not verify_signature(secret, body, request.headers["Radical-Signature"]):
        return 400
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

PATH = "/api/v1/notifications/subscriptions/"
SIGNATURE_HEADER = "Radical-Signature"


def verify_signature(secret: str, body: bytes, header: str, *, tolerance: float = 300.0) -> bool:
    """Whether ``header`` (``t=<unix time>,v1=<hex>``) is the HMAC-SHA256 of ``"<t>." + body``
    with ``secret``, made at most ``tolerance`` seconds ago (Stripe's scheme)."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for v in fields.get("v1", []))


class NotificationsMixin:
    """Subscription methods of :class:`~edge_agent.client.BridgeClient`."""

    request: Any  # BridgeClient.request

    def subscribe(self, *, target: str, url: str = "", email: str = "", edges: list[str] | None = None,
                  plugin: str = "", topic: str = "", states: list[str] | None = None,
                  match: dict[str, Any] | None = None, name: str = "", expires_at: str | None = None) -> dict[str, Any]:
        """Subscribe to events you may see; ``target`` is webhook, email or browser. The
        answer carries the webhook's signing ``secret``, this once."""
        body: dict[str, Any] = {"target": target, "url": url, "email": email, "edges": edges or [], "plugin": plugin,
                                "topic": topic, "states": states or [], "match": match or {}, "name": name}
        if expires_at:
            body["expires_at"] = expires_at
        return self.request("POST", PATH, json=body)

    def subscriptions(self) -> list[dict[str, Any]]:
        """Your subscriptions (with ``pending`` and ``dead`` delivery counts and ``last_error``)."""
        return self.request("GET", PATH)

    def unsubscribe(self, subscription_id: int) -> None:
        self.request("DELETE", f"{PATH}{int(subscription_id)}/")

    def deliveries(self, subscription_id: int, *, status: str | None = None) -> list[dict[str, Any]]:
        """The newest deliveries of a subscription (``status="dead"``: the dead-lettered ones)."""
        params = {"status": status} if status else None
        return self.request("GET", f"{PATH}{int(subscription_id)}/deliveries/", params=params)["results"]

    def test_subscription(self, subscription_id: int) -> dict[str, Any]:
        """Send a test event to the subscription's target now: ``{"ok", "status", "error"}``."""
        return self.request("POST", f"{PATH}{int(subscription_id)}/test/")

    def redeliver(self, subscription_id: int) -> int:
        """Put the subscription's dead-lettered deliveries back in the outbox; how many."""
        return self.request("POST", f"{PATH}{int(subscription_id)}/redeliver/")["redelivered"]
