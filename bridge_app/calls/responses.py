"""Responses the bridge sends without Django (raw ASGI: the proxy, the event stream) and
the few it sends through Django for the same paths (``api.proxy_views``,
``sse.events_view``): the JSON error body, the security and CORS headers, defined once."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.signals import setting_changed
from django.http import HttpResponse

from edge_agent import protocol

from .errors import AppError

Headers = list[tuple[bytes, bytes]]

# Plugin output is served from the bridge's origin, so it must never run as a page there.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; sandbox"),
    (b"cache-control", b"no-store"),
)
# What token callers from an allowed origin may read of a proxied answer.
PROXY_EXPOSED_HEADERS = b"x-request-id, retry-after"


def error_body(error: str, detail: str) -> bytes:
    """The bridge's error body: ``{"error": CODE, "detail": TEXT}``."""
    return protocol.encode({"error": error, "detail": detail}).encode("utf-8")


def request_headers(scope: dict[str, Any]) -> dict[str, str]:
    """An ASGI scope's headers as a dict (names are lowercase in ASGI; the last one wins)."""
    headers: dict[str, str] = {}
    for key, value in scope["headers"]:
        headers[key.decode("latin-1")] = value.decode("latin-1")
    return headers


def encode_headers(headers: dict[str, str]) -> Headers:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def base_headers(request_id: str) -> Headers:
    """Every proxied answer's: its request id and the security headers."""
    return [(b"x-request-id", request_id.encode("latin-1")), *SECURITY_HEADERS]


_origins_cache: frozenset[str] | None = None


def allowed_origins() -> frozenset[str]:
    """``CORS_ALLOWED_ORIGINS`` (RADICAL_CORS_ALLOWED_ORIGINS), read once."""
    global _origins_cache
    if _origins_cache is None:
        from django.conf import settings

        _origins_cache = frozenset(getattr(settings, "CORS_ALLOWED_ORIGINS", ()) or ())
    return _origins_cache


def _forget_origins(setting: str, **kwargs: Any) -> None:
    global _origins_cache
    if setting == "CORS_ALLOWED_ORIGINS":
        _origins_cache = None


setting_changed.connect(_forget_origins, dispatch_uid="radical_edge_cors_origins")


def cors_headers(origin: str | None, *, expose: bytes | None = None) -> Headers:
    """CORS for token callers, which Django's CORS middleware never sees: closed unless
    RADICAL_CORS_ALLOWED_ORIGINS lists the origin (cookies never travel cross-origin;
    preflights go through Django). ``expose``: response headers the caller may read."""
    if not origin or origin not in allowed_origins():
        return []
    out = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"origin")]
    if expose:
        out.append((b"access-control-expose-headers", expose))
    return out


async def send_response(send, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes = b"") -> None:
    """A whole response: its head, then its body."""
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, exc: AppError, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """``exc`` as a JSON error, after ``headers``. Nothing for 499 (nobody is listening)."""
    if exc.status == 499:
        return
    body = error_body(exc.error, exc.detail)
    out = [*headers, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *encode_headers(exc.headers)]
    await send_response(send, exc.status, out, body)


def django_error(exc: AppError, request_id: str | None = None) -> HttpResponse:
    """``exc`` as a Django response (same body and headers as :func:`send_error`)."""
    response = HttpResponse(error_body(exc.error, exc.detail), status=exc.status, content_type="application/json")
    if request_id is not None:
        response["X-Request-ID"] = request_id
    for key, value in exc.headers.items():
        response[key] = value
    return response


def add_security_headers(response: HttpResponse) -> None:
    for key, value in SECURITY_HEADERS:
        response[key.decode()] = value.decode()
