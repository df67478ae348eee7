"""``BridgeClient`` and ``EdgeClient``: the SDK's way into a bridge.

    from edge_agent.client import BridgeClient
    bc = BridgeClient("https://bridge.example", token="rda_…")   # or RADICAL_BRIDGE_URL / RADICAL_API_TOKEN
    ec = bc.get_edge_client("polaris-login")
    print(ec.get_plugin("sysinfo").get_metrics()["cpu"]["percent"])

TLS certificates are verified by default (``ca_cert`` for a site CA; ``verify=False`` only
for testing). Every error answer raises a typed :mod:`~edge_agent.client.errors` exception.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from .. import __version__
from .errors import BridgeError, ConnectionFailed, RateLimited, error_for
from .plugin import PluginClient, client_class


class BridgeClient:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        ca_cert: str | None = None,
        verify: bool = True,
        timeout: float = 90.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = url or os.environ.get("RADICAL_BRIDGE_URL")
        if not url:
            raise ValueError("no bridge URL: pass url= or set RADICAL_BRIDGE_URL")
        token = token or os.environ.get("RADICAL_API_TOKEN")
        if not token:
            raise ValueError("no API token: pass token= or set RADICAL_API_TOKEN")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}", "User-Agent": f"radical-edge-sdk/{__version__}"}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout,
            verify=ca_cert if ca_cert else verify, transport=transport,
        )
        self._subscriptions: list[Any] = []

    # -- plumbing ------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                content: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float | None = None, raw: bool = False) -> Any:
        """Send a request to ``path`` on the bridge. Returns parsed JSON (or the raw
        ``httpx.Response`` with ``raw=True``); raises a typed BridgeError on error answers.

        ``timeout`` also tells the bridge how long to wait for the edge (X-Request-Timeout).
        """
        hdrs = dict(headers or {})
        if timeout is not None:
            hdrs["X-Request-Timeout"] = f"{timeout:g}"
        try:
            response = self._http.request(
                method, path, params=params, json=json, content=content, headers=hdrs,
                timeout=(timeout + 5) if timeout is not None else self.timeout,
            )
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(0, "timeout", f"no answer from {self.url}: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(0, "connection_failed", f"cannot reach {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_from(response)
        if raw:
            return response
        if not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def close(self) -> None:
        for sub in self._subscriptions:
            sub.stop()
        self._http.close()

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- bridge routes -------------------------------------------------------------------

    def list_edges(self) -> dict[str, Any]:
        """Connected edges you may use: ``{name: {"endpoint": {...}, "plugins": {...}}}``."""
        return self.request("POST", "/edge/list")["data"]["edges"]

    def edges(self) -> list[dict[str, Any]]:
        """Every edge you may see, connected or not."""
        return self.request("GET", "/edges")["edges"]

    def get_edge_client(self, name: str) -> EdgeClient:
        return EdgeClient(self, name)

    def register_callback(self, edge: str, plugin: str, topic: str, fn, **kwargs: Any):
        """Call ``fn(event)`` for each live event of ``plugin`` on ``edge`` with ``topic``
        (``"*"`` for all). Returns a subscription with ``stop()``; it reconnects by itself."""
        from .events import EventSubscription

        sub = EventSubscription(self, edge=edge, plugin=plugin, topic=topic, callback=fn, **kwargs)
        sub.start()
        self._subscriptions.append(sub)
        return sub

    def events(self, *, edge: str | None = None, plugin: str | None = None, topic: str | None = None,
               **kwargs: Any):
        """Iterate over live events (dicts with ``type``: notification or topology), optionally
        of one edge, plugin and topic; reconnects by itself (see ``client/events.py``)."""
        from .events import iter_events

        return iter_events(self, edge=edge, plugin=plugin, topic=topic, **kwargs)


class EdgeClient:
    """One edge, as seen through the bridge."""

    def __init__(self, bridge: BridgeClient, name: str) -> None:
        self.bridge = bridge
        self.name = name

    def request(self, method: str, plugin: str, route: str, **kwargs: Any) -> Any:
        return self.bridge.request(method, f"/{self.name}/{plugin}/{route.lstrip('/')}", **kwargs)

    def info(self) -> dict[str, Any]:
        return self.bridge.request("GET", f"/api/v1/edges/{self.name}/")

    def plugins(self) -> list[str]:
        return [p["name"] for p in self.info()["plugins"]]

    def get_plugin(self, name: str, **session_params: Any) -> PluginClient:
        """A client for plugin ``name`` (typed for the built-in plugins). ``session_params``
        go into the plugin's ``register_session`` body (e.g. rhapsody's ``backends``)."""
        return client_class(name)(self, name, **session_params)


def _error_from(response: httpx.Response) -> BridgeError:
    error, detail, body = "http_error", response.reason_phrase, None
    try:
        body = response.json()
        if isinstance(body, dict):
            error = str(body.get("error", error))
            detail = str(body.get("detail", detail))
    except ValueError:
        detail = response.text[:500] or detail
    exc = error_for(response.status_code, error, detail, body=body,
                    request_id=response.headers.get("x-request-id"))
    if isinstance(exc, RateLimited):
        try:
            exc.retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            exc.retry_after = None
    return exc
