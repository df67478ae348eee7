"""Throttling of password log-ins (portal and admin) with django-axes: after
``AXES_FAILURE_LIMIT`` failed attempts for one account, or from one client address, further
attempts are refused for ``AXES_COOLOFF_TIME`` (each counted separately: a guesser cannot
go round the account limit by spreading over accounts, nor round the address limit by
changing address). Lockouts are audited as admin actions; an admin unlocks in Django admin
("Access attempts": delete the rows) or with ``manage.py axes_reset_username NAME``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def client_ip(request: HttpRequest) -> str:
    """The address the ASGI server saw (it applies X-Forwarded-For only from the trusted
    proxy, RADICAL_FORWARDED_ALLOW_IPS): never a header a client could forge."""
    return request.META.get("REMOTE_ADDR", "")


def _minutes() -> int:
    return max(1, int(settings.AXES_COOLOFF_TIME.total_seconds() // 60))


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: dict[str, Any] | None = None) -> HttpResponse:
    """What a locked-out person (or program) is told: why, for how long, and what to do."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    detail = (f"too many failed log-ins for this account or from your address; try again in {_minutes()} minutes, "
              "or ask a site administrator to unlock the account")
    if request.path.startswith("/api/") or "application/json" in request.headers.get("accept", ""):
        return JsonResponse({"error": "locked_out", "detail": detail}, status=429,
                            headers={"Retry-After": str(_minutes() * 60)})
    response = render(request, "registration/locked_out.html", {"username": username, "minutes": _minutes()},
                      status=429)
    response["Retry-After"] = str(_minutes() * 60)
    return response


def connect_signals() -> None:
    """Audit lockouts and unlocks (called from PortalAppConfig.ready)."""
    from axes.models import AccessAttempt
    from axes.signals import user_locked_out
    from django.db.models.signals import post_delete

    from bridge_app.domain import services

    @receiver(user_locked_out, weak=False, dispatch_uid="radical-edge-login-locked-out")
    def locked_out(sender, request=None, username=None, ip_address=None, **kwargs):
        services.action_record(actor=None, action="login_locked_out", target=username or "",
                               detail={"ip_address": ip_address or ""})

    @receiver(post_delete, sender=AccessAttempt, weak=False, dispatch_uid="radical-edge-login-unlocked")
    def unlocked(sender, instance, **kwargs):
        if instance.failures_since_start >= settings.AXES_FAILURE_LIMIT:
            services.action_record(actor=None, action="login_unlocked", target=instance.username or "",
                                   detail={"ip_address": instance.ip_address or ""})
