"""DRF errors in the bridge's shape: ``{"error": CODE, "detail": TEXT}``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def _flatten(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return "; ".join(_flatten(v) for v in detail)
    return str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # Django's own 404 and 403 (get_object_or_404, …) in the same shape as DRF's.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.APIException):
        code = exc.get_codes()
        code = code if isinstance(code, str) else "invalid"
        if response.status_code == status.HTTP_401_UNAUTHORIZED:
            code = "unauthorized"
        elif response.status_code == status.HTTP_403_FORBIDDEN:
            code = "forbidden"
        elif response.status_code == status.HTTP_404_NOT_FOUND:
            code = "not_found"
        elif response.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
            code = "rate_limited"  # the proxy's word for it too
        response.data = {"error": code, "detail": _flatten(exc.detail)}
    return response


def csrf_failure(request, reason: str = ""):
    """``CSRF_FAILURE_VIEW``: a JSON 403 for programs (the API and proxy paths, or a client
    that asks for JSON), Django's page for people."""
    from django.http import JsonResponse
    from django.views.csrf import csrf_failure as page

    if request.path.startswith("/api/") or "application/json" in request.headers.get("accept", "") \
            or (getattr(request, "resolver_match", None) is not None and request.resolver_match.url_name in (
                "proxy", "proxy-api")):
        return JsonResponse({"error": "csrf_failed", "detail": f"CSRF check failed: {reason}; send the "
                             "csrftoken cookie's value in the X-CSRFToken header"}, status=403)
    return page(request, reason=reason)
