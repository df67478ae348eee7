"""Writes about subscriptions: each audited (``ActionRecord``), named ``subscription_<verb>``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from ..conf import edge_settings
from ..domain.selectors import edge_list_for_user
from ..domain.services import action_record
from ..models import ActionRecord, EventRecord
from .models import Delivery, Subscription, new_secret
from .targets import TargetRefused, url_validate

UNSUBSCRIBE_SALT = "radical-edge.notifications.unsubscribe"
FIELDS = ("name", "edges", "plugin", "topic", "states", "match", "target", "url", "email", "active", "expires_at")


def _clean(user: Any, data: dict[str, Any], *, instance: Subscription | None = None) -> dict[str, Any]:
    """Check a subscription's fields (ValidationError with a message users can act on)."""
    target = data.get("target", instance.target if instance else None)
    if target not in Subscription.Target.values:
        raise ValidationError(f"target must be one of {', '.join(Subscription.Target.values)}")
    edges = data.get("edges", instance.edges if instance else [])
    if not isinstance(edges, list) or not all(isinstance(e, str) for e in edges):
        raise ValidationError("edges must be a list of edge names")
    if edges:
        visible = set(edge_list_for_user(user=user).filter(name__in=edges).values_list("name", flat=True))
        missing = sorted(set(edges) - visible)
        if missing:
            raise ValidationError(f"there is no edge named '{missing[0]}' that you may see")
    states = data.get("states", instance.states if instance else [])
    if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
        raise ValidationError("states must be a list of state names")
    match = data.get("match", instance.match if instance else {})
    if not isinstance(match, dict):
        raise ValidationError("match must be an object of data fields and values")
    if target == Subscription.Target.WEBHOOK:
        url = data.get("url", instance.url if instance else "")
        if not url:
            raise ValidationError("a webhook subscription needs a url")
        try:
            url_validate(url)
        except TargetRefused as exc:
            raise ValidationError(str(exc)) from None
    if target == Subscription.Target.EMAIL and not (data.get("email") or (instance and instance.email)
                                                     or getattr(user, "email", "")):
        raise ValidationError("an e-mail subscription needs an address (you have none on your account)")
    expires = data.get("expires_at")
    if isinstance(expires, datetime) and expires <= timezone.now():
        raise ValidationError("expires_at is in the past")
    return {**data, "edges": edges, "states": [s.upper() for s in states], "match": match}


def _detail(sub: Subscription) -> dict[str, Any]:
    return {"id": sub.pk, "target": sub.target, "destination": sub.destination(), "edges": sub.edges,
            "plugin": sub.plugin, "topic": sub.topic, "states": sub.states}


def subscription_create(*, user: Any, actor: Any, **data: Any) -> Subscription:
    """A new subscription of ``user``; only events after now are delivered to it. Its
    secret (``sub.secret``) is for the caller to show once."""
    data = _clean(user, {k: v for k, v in data.items() if k in FIELDS})
    limit = edge_settings.NOTIFY_MAX_SUBSCRIPTIONS_PER_USER
    with transaction.atomic():
        if Subscription.objects.filter(user=user).count() >= limit:
            raise ValidationError(f"you have {limit} subscriptions, the most this site allows; delete one first")
        start = EventRecord.objects.aggregate(m=Max("id"))["m"] or 0
        sub = Subscription.objects.create(user=user, start_after=start, **data)
        action_record(actor=actor, action=ActionRecord.Action.SUBSCRIPTION_CREATED, target=f"subscription {sub.pk}",
                      detail=_detail(sub))
    return sub


def subscription_update(*, sub: Subscription, actor: Any, **data: Any) -> Subscription:
    data = _clean(sub.user, {k: v for k, v in data.items() if k in FIELDS}, instance=sub)
    with transaction.atomic():
        for key, value in data.items():
            setattr(sub, key, value)
        sub.save()
        action_record(actor=actor, action=ActionRecord.Action.SUBSCRIPTION_UPDATED, target=f"subscription {sub.pk}",
                      detail={**_detail(sub), "changed": sorted(data)})
    return sub


def subscription_delete(*, sub: Subscription, actor: Any, reason: str = "") -> None:
    detail = _detail(sub)
    with transaction.atomic():
        sub.delete()
        action_record(actor=actor, action=ActionRecord.Action.SUBSCRIPTION_DELETED,
                      target=f"subscription {detail['id']}", detail={**detail, "reason": reason} if reason else detail)


def subscription_secret_rotate(*, sub: Subscription, actor: Any) -> str:
    """A new signing secret (returned once); the old one stops at once."""
    with transaction.atomic():
        sub.secret = new_secret()
        sub.save(update_fields=["secret"])
        action_record(actor=actor, action=ActionRecord.Action.SUBSCRIPTION_SECRET_ROTATED,
                      target=f"subscription {sub.pk}")
    return sub.secret


def deliveries_redeliver(*, sub: Subscription, actor: Any) -> int:
    """Dead-lettered deliveries of ``sub`` go back to the outbox; returns how many."""
    with transaction.atomic():
        n = Delivery.objects.filter(subscription=sub, status=Delivery.Status.DEAD).update(
            status=Delivery.Status.PENDING, next_attempt_at=None, attempts=0, created_at=timezone.now())
        if n:
            if not sub.active:
                sub.active = True
                sub.save(update_fields=["active"])
            action_record(actor=actor, action=ActionRecord.Action.SUBSCRIPTION_REDELIVERED,
                          target=f"subscription {sub.pk}", detail={"deliveries": n})
    return n


def unsubscribe_token(sub: Subscription) -> str:
    return signing.dumps({"s": sub.pk}, salt=UNSUBSCRIBE_SALT)


def subscription_for_unsubscribe_token(token: str) -> Subscription | None:
    try:
        pk = signing.loads(token, salt=UNSUBSCRIBE_SALT)["s"]
    except (signing.BadSignature, KeyError, TypeError):
        return None
    return Subscription.objects.filter(pk=pk).select_related("user").first()


def subscription_list_for_user(*, user: Any):
    return Subscription.objects.filter(user=user).order_by("id")


def subscription_audit_for_user(*, user: Any):
    """The subscription changes ``user`` made (a user sees only their own)."""
    return ActionRecord.objects.filter(actor_id=user.pk, action__startswith="subscription_").order_by("-at")
