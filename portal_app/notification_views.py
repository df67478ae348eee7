"""The portal's Notifications page, and the unsubscribe link of notification e-mails.

Changes go through ``bridge_app.notifications.services`` (audited). Browser subscriptions
are delivered by the open pages themselves (``static/portal/js/notify.js``).
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from bridge_app.domain.selectors import edge_list_for_user
from bridge_app.notifications import services
from bridge_app.notifications.models import Delivery
from bridge_app.notifications.test_delivery import test_delivery_send

from .forms import SubscriptionForm


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def notifications(request: HttpRequest) -> HttpResponse:
    """The caller's subscriptions, their dead-lettered deliveries, and a form for a new one."""
    edge_names = list(edge_list_for_user(user=request.user).values_list("name", flat=True))
    form = SubscriptionForm(request.POST or None, edge_names=edge_names)
    new_secret = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        states = [s.strip().upper() for s in data["states"].split(",") if s.strip()]
        days = data.get("expires_in_days")
        try:
            sub = services.subscription_create(
                user=request.user, actor=request.user, name=data["name"], target=data["target"], url=data["url"],
                email=data["email"], edges=data["edges"], topic=data["topic"], states=states,
                expires_at=timezone.now() + timedelta(days=days) if days else None)
        except ValidationError as exc:
            form.add_error(None, "; ".join(exc.messages))
        else:
            if sub.target == sub.Target.WEBHOOK:
                new_secret = sub.secret
            else:
                messages.success(request, f"Subscribed: {sub.name or f'subscription #{sub.pk}'}.")
                return redirect("portal:notifications")
            form = SubscriptionForm(edge_names=edge_names)
    subs = list(services.subscription_list_for_user(user=request.user))
    for sub in subs:
        sub.pending_count = sub.deliveries.filter(status=Delivery.Status.PENDING).count()
        sub.dead_list = list(sub.deliveries.filter(status=Delivery.Status.DEAD).order_by("-id")[:5])
        sub.dead_count = sub.deliveries.filter(status=Delivery.Status.DEAD).count()
    return render(request, "portal/notifications.html", {
        "form": form, "subscriptions": subs, "new_secret": new_secret,
        "audit": services.subscription_audit_for_user(user=request.user)[:20],
        "page_context": {"user": request.user.get_username()},
    }, status=201 if new_secret else 200)


def _own(request: HttpRequest, pk: int):
    return get_object_or_404(services.subscription_list_for_user(user=request.user), pk=pk)


@login_required
@require_POST
def notification_delete(request: HttpRequest, pk: int) -> HttpResponse:
    services.subscription_delete(sub=_own(request, pk), actor=request.user)
    messages.success(request, "The subscription is deleted.")
    return redirect("portal:notifications")


@login_required
@require_POST
def notification_test(request: HttpRequest, pk: int) -> HttpResponse:
    from asgiref.sync import async_to_sync

    outcome = async_to_sync(test_delivery_send)(_own(request, pk))
    if outcome.ok:
        messages.success(request, "The test event was delivered.")
    else:
        messages.error(request, f"The test event was not delivered: {outcome.error}")
    return redirect("portal:notifications")


@login_required
@require_POST
def notification_redeliver(request: HttpRequest, pk: int) -> HttpResponse:
    n = services.deliveries_redeliver(sub=_own(request, pk), actor=request.user)
    messages.success(request, f"{n} dead-lettered deliveries are back in the outbox.")
    return redirect("portal:notifications")


# A mail client's one-click unsubscribe (RFC 8058) POSTs without a session or CSRF token;
# the signed token in the URL is the authority.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    sub = services.subscription_for_unsubscribe_token(token)
    if request.method == "POST" and sub is not None:
        services.subscription_delete(sub=sub, actor=sub.user, reason="unsubscribe link")
        return render(request, "portal/unsubscribe.html", {"done": True})
    return render(request, "portal/unsubscribe.html", {"sub": sub, "done": False}, status=200 if sub else 404)
