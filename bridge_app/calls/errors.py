"""The bridge's own answers: one exception class for every "this call ends here with
``{"error", "detail"}`` and this HTTP status" (the proxy's refusals, a failed call, a
refused event stream, a refused MCP plugin call). ``responses.py`` turns one into a raw
ASGI or a Django response; the REST API's DRF errors take the same shape
(``api/errors.py``)."""

from __future__ import annotations


class AppError(Exception):
    """An answer the bridge gives itself: ``status``, ``error`` (a stable code), ``detail``
    (for people) and extra response ``headers`` (e.g. ``retry-after``)."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None,
                 *, message: str | None = None) -> None:
        super().__init__(detail if message is None else message)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}

    def as_dict(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


class ProxyError(AppError):
    """A proxied call answered by the bridge itself (``proxy.ProxyError``): raised by the
    proxy, its guards (rate limits) and its answer gates (strict audit)."""
