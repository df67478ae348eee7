"""``ALLOWED_HOSTS`` for the paths served outside Django (the token proxy and ``/events``).

Django checks the ``Host`` header when a view asks for it (``request.get_host()``); the
lean ASGI handlers never build a request, so they ask here, with the same rules
(``django.http.request.validate_host``, ``USE_X_FORWARDED_HOST``). Answers for hosts that
passed are cached: a site has a handful, and the check runs on every call."""

from __future__ import annotations

from django.conf import settings
from django.core.signals import setting_changed
from django.http.request import split_domain_port, validate_host

_allowed: set[str] = set()
_trust_forwarded_host: bool | None = None  # settings.USE_X_FORWARDED_HOST, read once
# Hosts remembered as allowed at most: every one is in ALLOWED_HOSTS, but a "*." pattern
# matches endlessly many.
_MAX_REMEMBERED = 256


def host_allowed(headers: dict[str, str]) -> bool:
    """Whether the request's host (``Host``, or ``X-Forwarded-Host`` where trusted) is one of
    ``ALLOWED_HOSTS`` (with ``DEBUG``, Django's own defaults for local hosts apply)."""
    global _trust_forwarded_host
    host = headers.get("host", "")
    if _trust_forwarded_host is None:
        _trust_forwarded_host = bool(settings.USE_X_FORWARDED_HOST)
    if _trust_forwarded_host and "x-forwarded-host" in headers:
        host = headers["x-forwarded-host"].split(",")[-1].strip()
    if host in _allowed:
        return True
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    if not domain or not validate_host(domain, allowed):
        return False
    if len(_allowed) < _MAX_REMEMBERED:
        _allowed.add(host)
    return True


def _reset(*, setting: str, **kwargs) -> None:
    global _trust_forwarded_host
    if setting in ("ALLOWED_HOSTS", "USE_X_FORWARDED_HOST", "DEBUG"):
        _allowed.clear()
        _trust_forwarded_host = None


setting_changed.connect(_reset)
