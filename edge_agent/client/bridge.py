"""``BridgeClient`` and ``EdgeClient``: the SDK's way into a bridge.

    from edge_agent.client import BridgeClient
    bc = BridgeClient("https://bridge.example", token="rda_…")   # or RADICAL_BRIDGE_URL / RADICAL_API_TOKEN
    ec = bc.get_edge_client("polaris-login")
    print(ec.get_plugin("sysinfo").get_metrics()["cpu"]["percent"])

TLS certificates are verified by default (``ca_cert``, or ``RADICAL_BRIDGE_CERT`` as the
original RADICAL Edge read it, for a site CA; ``verify=False`` only for testing). Every error
answer raises a typed :mod:`~edge_agent.client.errors` exception.

The original RADICAL Edge SDK's calls work too (``list_edges()`` as a list of names,
``register_callback(edge, plugin, callback)``, ``EdgeClient.list_plugins()``, plugin clients'
``register_session``/``unregister_session``/``register_notification_callback``); see
docs/MIGRATING.md. Where ours is better, they warn with a DeprecationWarning.
"""

from __future__ import annotations

import inspect
import os
import ssl
import time
import warnings
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import httpx

from .. import __version__
from .errors import BridgeError, ConnectionFailed, RateLimited, error_for
from .notifications import NotificationsMixin
from .plugin import PluginClient, client_class


class BridgeClient(NotificationsMixin):
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        ca_cert: str | None = None,
        cert: str | None = None,
        verify: bool = True,
        timeout: float = 90.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = url or os.environ.get("RADICAL_BRIDGE_URL")
        if not url:
            raise ValueError("no bridge URL: pass url= or set RADICAL_BRIDGE_URL")
        url, url_token = _split_token(url)
        token = token or os.environ.get("RADICAL_API_TOKEN") or url_token
        if not token:
            raise ValueError("no API token: pass token= or set RADICAL_API_TOKEN")
        # ``cert`` and RADICAL_BRIDGE_CERT: the original SDK's names for the CA to trust (as
        # the agent's RADICAL_BRIDGE_CA_CERT). An explicit verify=False still wins.
        ca_cert = (ca_cert or cert or os.environ.get("RADICAL_BRIDGE_CA_CERT")
                   or os.environ.get("RADICAL_BRIDGE_CERT") or None)
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}", "User-Agent": f"radical-edge-sdk/{__version__}"}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout,
            # httpx deprecates verify=<path>: a context that trusts the site CA instead.
            verify=(ssl.create_default_context(cafile=ca_cert) if ca_cert else True) if verify else False,
            transport=transport,
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

    def list_edges(self) -> EdgeList:
        """Connected edges you may use: a list of their names (as the original SDK
        answered) that also reads like ``{name: {"endpoint": {...}, "plugins": {...}}}``
        (``edges["polaris"]``, ``.items()``, ``.get()``)."""
        return EdgeList(self.request("POST", "/edge/list")["data"]["edges"])

    def edges(self) -> list[dict[str, Any]]:
        """Every edge you may see, connected or not."""
        return self.request("GET", "/edges")["edges"]

    def get_edge_client(self, name: str) -> EdgeClient:
        return EdgeClient(self, name)

    def register_callback(self, edge: str | None = None, plugin: str | None = None, topic: Any = None,
                          fn: Callable | None = None, *, callback: Callable | None = None,
                          edge_id: str | None = None, plugin_name: str | None = None, **kwargs: Any):
        """Call ``fn(event)`` for each live event of ``plugin`` on ``edge`` with ``topic``
        (None or ``"*"`` for all). Returns a subscription with ``stop()``; it reconnects by itself.

        The original SDK's forms work too, with a DeprecationWarning:
        ``register_callback(edge, plugin, callback)`` and ``register_callback(edge_id=…,
        plugin_name=…, topic=…, callback=…)`` call ``callback(topic, data)`` (or
        ``callback(edge, plugin, topic, data)`` if it takes four arguments).
        """
        from .events import EventSubscription

        legacy = None
        if callable(topic) and fn is None and callback is None:
            legacy, topic = topic, None
        elif callback is not None and fn is None:
            legacy = callback
        edge = edge if edge is not None else edge_id
        plugin = plugin if plugin is not None else plugin_name
        if legacy is not None:
            warnings.warn("register_callback(edge, plugin, callback) is the original SDK's form; "
                          "register_callback(edge, plugin, topic, fn) gives fn the whole event "
                          "(with its id and time)", DeprecationWarning, stacklevel=2)
            fn = legacy_callback(legacy)
        if fn is None:
            raise ValueError("register_callback needs a callback")
        sub = EventSubscription(self, edge=edge, plugin=plugin, topic=topic, callback=fn, **kwargs)
        sub.legacy_callback = legacy
        sub.start()
        self._subscriptions.append(sub)
        return sub

    def unregister_callback(self, edge: str | None = None, plugin: str | None = None, callback: Any = None,
                            *args: Any, edge_id: str | None = None, plugin_name: str | None = None,
                            topic: str | None = None) -> int:
        """Stop the subscriptions ``register_callback`` made for ``callback`` (the function, or
        the subscription it returned) on ``edge``/``plugin``; returns how many were stopped.
        The original SDK's ``unregister_callback(edge, plugin, callback)``."""
        if args and callback is not None and not callable(callback):
            callback = args[0]  # (edge, plugin, topic, callback), the keyword form's order
        edge = edge if edge is not None else edge_id
        plugin = plugin if plugin is not None else plugin_name
        stopped = 0
        for sub in list(self._subscriptions):
            if callback is not sub and callback not in (getattr(sub, "legacy_callback", None), sub.callback):
                continue
            reader = sub._reader
            if (edge is not None and reader.edge not in (None, edge)) or (
                    plugin is not None and reader.plugin not in (None, plugin)):
                continue
            sub.stop()
            self._subscriptions.remove(sub)
            stopped += 1
        return stopped

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
        # Edge names are DNS-like and lower-case; the original accepted any string, so a
        # script's "Polaris" finds the edge "polaris" (docs/MIGRATING.md).
        self.name = name.lower() if name != name.lower() and name.lower().isascii() else name

    def request(self, method: str, plugin: str, route: str, **kwargs: Any) -> Any:
        return self.bridge.request(method, f"/{self.name}/{plugin}/{route.lstrip('/')}", **kwargs)

    def info(self) -> dict[str, Any]:
        return self.bridge.request("GET", f"/api/v1/edges/{self.name}/")

    def plugins(self) -> list[str]:
        return [p["name"] for p in self.info()["plugins"]]

    def list_plugins(self) -> dict[str, Any]:
        """The original SDK's view of this edge's plugins: ``{name: {"type", "namespace",
        "version", "ui_config"}}`` from ``POST /edge/list`` (empty if the edge is offline)."""
        edges = self.bridge.request("POST", "/edge/list")["data"]["edges"]
        return dict(edges.get(self.name, {}).get("plugins", {}))

    def get_plugin(self, name: str, **session_params: Any) -> PluginClient:
        """A client for plugin ``name`` (typed for the built-in plugins). ``session_params``
        go into the plugin's ``register_session`` body (e.g. rhapsody's ``backends``)."""
        return client_class(name)(self, name, **session_params)

    # -- child edges (edges on compute nodes) --------------------------------------------

    def launch_edge(self, *, executor: str = "slurm", queue: str | None = None, account: str | None = None,
                    nodes: int = 1, duration: float, plugins: list[str] | None = None, name: str | None = None,
                    bye_margin: float | None = None, connectivity: str = "auto",
                    custom_attributes: dict[str, Any] | None = None) -> ChildEdge:
        """Start a child edge on compute nodes: this edge submits a batch job (``duration``
        seconds of walltime on ``nodes`` nodes of ``queue``) that runs an agent with
        ``plugins``. Returns once the job is submitted; ``wait_online()`` waits for the
        scheduler to start it. The child is named ``{this edge}.{name}`` (random if None)."""
        body: dict[str, Any] = {"executor": executor, "queue": queue or "", "account": account or "",
                                "nodes": nodes, "duration": duration, "name": name, "connectivity": connectivity}
        if plugins:
            body["plugins"] = list(plugins)
        if bye_margin is not None:
            body["bye_margin"] = bye_margin
        if custom_attributes:
            body["custom_attributes"] = custom_attributes
        info = self.bridge.request("POST", f"/api/v1/edges/{self.name}/children", json=body)
        return ChildEdge(self.bridge, info)

    def children(self) -> list[ChildEdge]:
        """The child edges of this edge, newest first (ended ones too)."""
        rows = self.bridge.request("GET", f"/api/v1/edges/{self.name}/children")
        return [ChildEdge(self.bridge, info) for info in rows]


class ChildEdge(EdgeClient):
    """A child edge: an :class:`EdgeClient` that also knows its batch job."""

    def __init__(self, bridge: BridgeClient, info: dict[str, Any]) -> None:
        super().__init__(bridge, info["name"])
        self.parent = info.get("parent")
        self.job: dict[str, Any] = dict(info.get("job") or {})
        self.online = bool(info.get("online"))

    @property
    def job_id(self) -> str | None:
        """The scheduler's id of the child's job (Slurm's, PBS's), else psij's."""
        return self.job.get("native_id") or self.job.get("job_id")

    @property
    def ended(self) -> bool:
        return bool(self.job.get("ended"))

    def refresh(self) -> ChildEdge:
        info = self.info()
        self.job, self.online = dict(info.get("job") or {}), bool(info.get("online"))
        return self

    def wait_online(self, timeout: float = 600.0, interval: float = 1.0) -> ChildEdge:
        """Wait until the child's agent has registered (its job started). Raises
        TimeoutError, or RuntimeError if the job ended first."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            if self.online:
                return self
            if self.ended:
                raise RuntimeError(f"child edge {self.name} ended before it came online: "
                                   f"{self.job.get('state')} {self.job.get('detail', '')}".strip())
            if time.monotonic() >= deadline:
                raise TimeoutError(f"child edge {self.name} not online after {timeout:g}s "
                                   f"(job {self.job_id}: {self.job.get('state')})")
            time.sleep(interval)

    def stop(self) -> ChildEdge:
        """Cancel the child's job and revoke its token."""
        info = self.bridge.request("POST", f"/api/v1/edges/{self.name}/stop")
        self.job, self.online = dict(info.get("job") or {}), bool(info.get("online"))
        return self


class EdgeList(list):
    """The names of the connected edges (a list, as the original SDK's ``list_edges()``
    answered), that also answers like the ``{name: info}`` dict of ``POST /edge/list``:
    ``edges["polaris"]``, ``edges.get(name)``, ``.keys()``, ``.values()``, ``.items()``.
    ``in`` and iteration are over names either way."""

    def __init__(self, edges: dict[str, Any]) -> None:
        super().__init__(edges)
        self.info: dict[str, Any] = dict(edges)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.info[key]
        return super().__getitem__(key)

    def get(self, name: str, default: Any = None) -> Any:
        return self.info.get(name, default)

    def keys(self):
        return self.info.keys()

    def values(self):
        return self.info.values()

    def items(self):
        return self.info.items()


def _split_token(url: str) -> tuple[str, str | None]:
    """``https://:rda_…@bridge`` (how the original SDK, which has no token parameter, can be
    given one) → ``("https://bridge", "rda_…")``; other URLs are returned as they are."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    token = next((t for t in (parts.password, parts.username) if t and t.startswith("rda_")), None)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), token


def legacy_callback(callback: Callable) -> Callable[[dict[str, Any]], Any]:
    """Adapt an original-SDK callback, ``callback(topic, data)`` or ``callback(edge, plugin,
    topic, data)``, to one that takes our event dict."""
    try:
        params = inspect.signature(callback).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        four = len(positional) >= 4
    except (TypeError, ValueError):
        four = False

    def call(event: dict[str, Any]) -> Any:
        if four:
            return callback(event.get("edge"), event.get("plugin"), event.get("topic"), event.get("data"))
        return callback(event.get("topic"), event.get("data"))

    return call


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
