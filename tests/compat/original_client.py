"""A client that calls the bridge as the original RADICAL Edge 0.0.1 SDK and its example
scripts did, written for these tests from the original's documented routes (docs/MIGRATING.md;
not the original's code): ``httpx`` with no token parameter (the token travels as the URL's
userinfo, which httpx sends as HTTP Basic credentials), ``POST /edge/list`` for edges and
plugin namespaces, ``POST {namespace}/register_session`` then routes with the sid, and
``GET /events`` read as plain ``data:`` lines whose ``topic`` is ``topology`` or
``notification``, dispatched by ``(edge, plugin)`` to ``callback(topic, data)``.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import httpx


def url_with_token(url: str, token: str) -> str:
    """``http://host:port`` → ``http://:TOKEN@host:port`` (what a user of the original puts
    in RADICAL_BRIDGE_URL)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f":{token}@{parts.netloc}", parts.path, "", ""))


class OriginalBridgeClient:
    def __init__(self, url: str, cert: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, verify=cert or False, timeout=60.0)
        self.callbacks: dict[tuple[str, str], list[Callable[[str, Any], None]]] = {}
        self.messages: list[dict[str, Any]] = []  # every SSE message, as parsed
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def list_edges(self) -> list[str]:
        response = self.http.post("/edge/list")
        response.raise_for_status()
        return list(response.json()["data"]["edges"].keys())

    def get_edge_client(self, name: str) -> OriginalEdgeClient:
        return OriginalEdgeClient(self, name)

    def register_callback(self, edge: str, plugin: str, callback: Callable[[str, Any], None]) -> None:
        self.callbacks.setdefault((edge, plugin), []).append(callback)
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        try:
            with httpx.stream("GET", f"{self.url}/events", verify=False, timeout=None) as response:
                self.listening.set()
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if not line.startswith("data: "):
                        continue
                    payload = json.loads(line[6:])
                    self.messages.append(payload)
                    if payload.get("topic") != "notification":
                        continue
                    note = payload["data"]
                    for cb in self.callbacks.get((note["edge"], note["plugin"]), []):
                        cb(note["topic"], note["data"])
        except httpx.HTTPError:
            pass
        finally:
            self.listening.set()

    def close(self) -> None:
        self._stop.set()
        self.http.close()


class OriginalEdgeClient:
    def __init__(self, bridge: OriginalBridgeClient, name: str) -> None:
        self.bridge = bridge
        self.name = name

    def list_plugins(self) -> dict[str, Any]:
        response = self.bridge.http.post("/edge/list")
        response.raise_for_status()
        return response.json()["data"]["edges"].get(self.name, {}).get("plugins", {})

    def get_plugin(self, name: str, **kwargs: Any) -> OriginalPluginClient:
        info = self.list_plugins()[name]
        client = OriginalPluginClient(self.bridge, self.name, name, info["namespace"])
        client.register_session(**kwargs)
        return client


class OriginalPluginClient:
    def __init__(self, bridge: OriginalBridgeClient, edge: str, plugin: str, namespace: str) -> None:
        self.bridge, self.edge, self.plugin, self.namespace = bridge, edge, plugin, namespace
        self.sid: str | None = None

    def _url(self, route: str) -> str:
        return f"{self.namespace}/{route}"

    def get(self, route: str, **params: Any) -> Any:
        response = self.bridge.http.get(self._url(route), params=params)
        response.raise_for_status()
        return response.json()

    def post(self, route: str, body: Any = None) -> Any:
        response = self.bridge.http.post(self._url(route), json=body)
        response.raise_for_status()
        return response.json()

    def register_session(self, **kwargs: Any) -> str:
        self.sid = self.post("register_session", kwargs)["sid"]
        return self.sid

    def unregister_session(self) -> Any:
        answer = self.post(f"unregister_session/{self.sid}")
        self.sid = None
        return answer

    def register_notification_callback(self, callback: Callable[[str, Any], None]) -> None:
        self.bridge.register_callback(self.edge, self.plugin, callback)
