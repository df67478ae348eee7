"""The "send a test" button: one synthetic event to a subscription's target, now."""

from __future__ import annotations

import time

import httpx
from asgiref.sync import sync_to_async

from .models import Subscription
from .targets import Outcome, email_message, webhook_post


def _test_event(sub: Subscription) -> dict:
    return {"id": 0, "kind": "test", "edge": "", "plugin": "bridge", "topic": "test",
            "data": {"message": f"a test of subscription #{sub.pk}"}, "ts": time.time()}


async def test_delivery_send(sub: Subscription) -> Outcome:
    """Send a test event to ``sub``'s target; never retried."""
    event = _test_event(sub)
    if sub.target == Subscription.Target.WEBHOOK:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            return await webhook_post(client, url=sub.url, secret=sub.secret, sub_id=sub.pk, event=event)
    if sub.target == Subscription.Target.EMAIL:
        return await sync_to_async(_email)(sub, event)
    return Outcome(False, None, "browser notifications are shown by open portal pages; the portal tests them")


def _email(sub: Subscription, event: dict) -> Outcome:
    from ..conf import edge_settings
    from .services import unsubscribe_token

    base = edge_settings.PUBLIC_URL.rstrip("/") or "http://localhost:8000"
    try:
        email_message(sub=sub, events=[event], address=sub.destination(),
                      unsubscribe_url=f"{base}/notifications/unsubscribe/{unsubscribe_token(sub)}/").send()
    except Exception as exc:
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:500])
    return Outcome(True)
