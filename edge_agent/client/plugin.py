"""The base of every plugin client: session handling and calls to the plugin's routes.

A plugin client opens its plugin session lazily on the first call that needs one, and
opens a new one by itself if the old one expired (410) or vanished (404 after an agent
restart). Clients for specific plugins live beside their plugins
(``edge_agent/plugins/<name>/client.py``) and are found through :data:`CLIENTS`.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from typing import TYPE_CHECKING, Any, Callable

from .errors import NotFound, SessionExpired

if TYPE_CHECKING:
    from .bridge import EdgeClient

# plugin name -> "module:Class" of its client; unknown plugins get the generic PluginClient.
CLIENTS = {
    "sysinfo": "edge_agent.plugins.sysinfo.client:SysInfoClient",
    "psij": "edge_agent.plugins.psij.client:PsijClient",
    "queue_info": "edge_agent.plugins.queue_info.client:QueueInfoClient",
    "rhapsody": "edge_agent.plugins.rhapsody.client:RhapsodyClient",
    "files": "edge_agent.plugins.files.client:FilesClient",
}


def client_class(plugin: str) -> type[PluginClient]:
    spec = CLIENTS.get(plugin)
    if spec is None:
        return PluginClient
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return PluginClient


class PluginClient:
    """Generic client for any plugin: ``call("GET", "status/{sid}/42")`` fills in the
    session id. Subclasses add typed methods."""

    def __init__(self, edge: EdgeClient, name: str, **session_params: Any) -> None:
        self.edge = edge
        self.name = name
        self.session_params = session_params
        self._sid: str | None = None
        self._lock = threading.Lock()

    # -- sessions ------------------------------------------------------------------------

    @property
    def sid(self) -> str:
        """This client's session id (a session is registered on first use)."""
        with self._lock:
            if self._sid is None:
                data = self.edge.request("POST", self.name, "register_session", json=self.session_params)
                self._sid = data["sid"]
            return self._sid

    def register_session(self, **session_params: Any) -> str:
        """Open a new plugin session now (the original SDK's explicit call; ours opens one
        on first use) and return its id. ``session_params`` add to those ``get_plugin`` got;
        a session this client had is unregistered."""
        self.session_params = {**self.session_params, **session_params}
        data = self.edge.request("POST", self.name, "register_session", json=self.session_params)
        with self._lock:
            old, self._sid = self._sid, data["sid"]
        if old:
            self._unregister(old)
        return data["sid"]

    def unregister_session(self) -> None:
        """Close this client's session (the original SDK's name for :meth:`close`)."""
        self.close()

    def register_notification_callback(self, callback: Callable, topic: str | None = None, **kwargs: Any):
        """The original SDK's per-plugin callback: ``callback(topic, data)`` (or ``(edge,
        plugin, topic, data)``) for this plugin's events on this edge. Deprecated: use
        ``bridge.register_callback(edge, plugin, topic, fn)``, whose ``fn`` gets the whole
        event. Returns the subscription (``stop()`` ends it)."""
        from .bridge import legacy_callback

        warnings.warn("register_notification_callback is the original SDK's call; use "
                      "BridgeClient.register_callback(edge, plugin, topic, fn)", DeprecationWarning, stacklevel=2)
        sub = self.edge.bridge.register_callback(self.edge.name, self.name, topic, legacy_callback(callback), **kwargs)
        sub.legacy_callback = callback
        return sub

    def _unregister(self, sid: str) -> None:
        try:
            self.edge.request("POST", self.name, f"unregister_session/{sid}")
        except (NotFound, SessionExpired):
            pass

    def close(self) -> None:
        """Unregister the session (if one was opened)."""
        with self._lock:
            sid, self._sid = self._sid, None
        if sid:
            self._unregister(sid)

    def __enter__(self) -> PluginClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------

    def call(self, method: str, route: str, **kwargs: Any) -> Any:
        """Call ``route`` (``{sid}`` is replaced by the session id) and return its JSON.
        Retries once with a fresh session if the session expired or was lost."""
        if "{sid}" not in route:
            return self.edge.request(method, self.name, route, **kwargs)
        sid = self.sid
        try:
            return self.edge.request(method, self.name, route.replace("{sid}", sid), **kwargs)
        except (SessionExpired, NotFound) as exc:
            if isinstance(exc, NotFound) and exc.error not in ("unknown_session",):
                raise
            with self._lock:
                if self._sid == sid:
                    self._sid = None
            return self.edge.request(method, self.name, route.replace("{sid}", self.sid), **kwargs)

    def version(self) -> dict[str, Any]:
        return self.call("GET", "version")

    def health(self) -> dict[str, Any]:
        return self.call("GET", "health")

    def list_sessions(self) -> list[dict[str, Any]]:
        return self.call("GET", "list_sessions")["sessions"]

    def ui_config(self) -> dict[str, Any]:
        return self.call("GET", "ui_config")
