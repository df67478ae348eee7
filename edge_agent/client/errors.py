"""Typed errors of the SDK. Each carries the HTTP ``status``, the bridge's or plugin's
``error`` code and its ``detail`` text."""

from __future__ import annotations

from typing import Any


class BridgeError(RuntimeError):
    """Any error answer from the bridge or a plugin. A RuntimeError, as the original
    RADICAL Edge SDK raised, so that its users' ``except RuntimeError`` still catches it."""

    def __init__(self, status: int, error: str, detail: str, *, body: Any = None,
                 request_id: str | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.body = body
        self.request_id = request_id


class ConnectionFailed(BridgeError):
    """The bridge could not be reached at all (DNS, refused, TLS failure, timeout)."""


class BadRequest(BridgeError):
    """400 / 422: the request was malformed or invalid."""


class Unauthorized(BridgeError):
    """401: missing, wrong, expired or revoked token."""


class Forbidden(BridgeError):
    """403: authenticated, but not allowed (read-only role or token)."""


class NotFound(BridgeError):
    """404: unknown edge (or one you may not see), plugin, route, session, job or task."""


class Conflict(BridgeError):
    """409."""


class SessionExpired(BridgeError):
    """410: the plugin session expired; the plugin clients open a new one by themselves."""


class PayloadTooLarge(BridgeError):
    """413: the body exceeds the bridge's or the edge's limit."""


class RateLimited(BridgeError):
    """429: too many requests; ``retry_after`` seconds, if the bridge said."""

    retry_after: float | None = None


class EdgeDisconnected(BridgeError):
    """502: the edge went away while the request was in flight."""


class EdgeOffline(BridgeError):
    """503 ``edge_offline`` / ``edge_suspended``: the edge is not connected."""


class BridgeUnavailable(BridgeError):
    """503 for other reasons (the bridge is overloaded or restarting)."""


class EdgeTimeout(BridgeError):
    """504: the edge did not answer in time; the bridge cancelled the work."""


_BY_STATUS: dict[int, type[BridgeError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: SessionExpired,
    413: PayloadTooLarge, 422: BadRequest, 429: RateLimited, 502: EdgeDisconnected, 504: EdgeTimeout,
}


def error_for(status: int, error: str, detail: str, **kwargs: Any) -> BridgeError:
    if status == 503:
        cls: type[BridgeError] = EdgeOffline if error in ("edge_offline", "edge_suspended") else BridgeUnavailable
    else:
        cls = _BY_STATUS.get(status, BridgeError)
    return cls(status, error, detail, **kwargs)
