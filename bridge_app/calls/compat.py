"""What keeps the original RADICAL Edge's programs working against this bridge (docs/MIGRATING.md).

- :class:`CompatApp` (ASGI, in front of everything HTTP): the original SDK has no token
  parameter, but it sends the user and password of ``RADICAL_BRIDGE_URL`` as HTTP Basic
  credentials, so ``https://:rda_…@bridge.example`` carries an API token. Such a request is
  served as ``Authorization: Bearer rda_…`` and marked ``X-Radical-Edge-Format: v0``: plugins
  answer it in the original's shapes, and ``/events`` speaks the original's dialect.
- :func:`old_agent_refusal`: the original agent opens with a ``register`` frame and no token.
  It is told, once and in words its log shows (it logs an ``error`` frame's ``message`` as
  ``[Edge] Registration error: …`` and stops for good), what it needs: a radical-edge-agent
  and an edge token. The socket is then held open for ``OLD_AGENT_HOLD`` seconds before it
  is closed with 4002 and a short reason, so a variant that ignores the frame and reconnects
  (the original resets its backoff to 1 s on every connect, whatever the close code) comes
  back at most once a minute instead of once a second.
- :class:`V0Stream`: ``GET /events`` as the original sent it (``?format=v0``, the header, or a
  Basic-authenticated request): plain ``data:`` lines, ``{"topic": "topology", "data": <the
  /edge/list data>}`` first and after every change of edges, and ``{"topic": "notification",
  "data": {edge, plugin, topic, data}}``; rhapsody's batched ``task_status`` is split into one
  event per task, as the original sent them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

from channels.db import database_sync_to_async
from django.core.serializers.json import DjangoJSONEncoder

from ..access.tokens import API_TOKEN_PREFIX

log = logging.getLogger(__name__)

FORMAT_HEADER = "x-radical-edge-format"
V0 = "v0"


def bearer_from_basic(authorization: str | None) -> str | None:
    """The API token in ``Basic base64(user:rda_…)`` (or with the token as the user), else None."""
    if not authorization or authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    user, _, password = decoded.partition(":")
    for candidate in (password, user):
        if candidate.startswith(API_TOKEN_PREFIX):
            return candidate
    return None


def _from_a_browser(headers: list[tuple[bytes, bytes]]) -> bool:
    """A browser may attach Basic credentials it remembers to requests another site makes
    (like a cookie), and the token path checks no CSRF token; the original SDK sends no
    ``Origin``, no ``Cookie`` and no ``Sec-Fetch-*`` headers, so a request with any of them
    is not taken for it."""
    return any(k in (b"origin", b"cookie") or k.startswith(b"sec-fetch-") for k, _ in headers)


class CompatApp:
    """Turns the original SDK's Basic credentials into our Bearer token and marks the
    request as wanting the original's shapes (see the module docstring). Requests that look
    like a browser's keep their Basic header (and are then refused as unauthenticated)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            for key, value in headers:
                if key == b"authorization":
                    token = bearer_from_basic(value.decode("latin-1"))
                    if token is not None and not _from_a_browser(headers):
                        kept = [(k, v) for k, v in headers if k not in (b"authorization", FORMAT_HEADER.encode())]
                        kept += [(b"authorization", f"Bearer {token}".encode("latin-1")),
                                 (FORMAT_HEADER.encode(), V0.encode())]
                        scope = {**scope, "headers": kept}
                    break
        return await self.app(scope, receive, send)


OLD_AGENT_CLOSE_REASON = "old RADICAL Edge agent: install radical-edge-agent and use an edge token"


def old_agent_refusal(text: str) -> dict[str, Any] | None:
    """The ``error`` frame for an original agent's first frame (``{"type": "register", …}``),
    or None if ``text`` is not one. It carries ``message`` (what the original logs) as well
    as our ``error``/``detail``."""
    if len(text) > 64 * 1024 or '"register"' not in text:  # the original's frames are small
        return None
    try:
        frame = json.loads(text)
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("type") != "register":
        return None
    from edge_agent import __version__

    name = frame.get("edge_name")
    called = f" (it called itself {str(name)[:63]!r})" if name else ""
    message = (
        f"this bridge runs Radical Edge {__version__}, which no longer accepts RADICAL Edge 0.0.x agents{called}. "
        f"Install radical-edge-agent >= {__version__} on this node (pip install radical-edge-agent), ask the "
        "bridge's admin for an edge token (manage.py edge_token_create EDGE-NAME --owner USER), and run "
        "radical-edge-service --url BRIDGE-URL --token-file FILE. See docs/MIGRATING.md."
    )
    return {"type": "error", "error": "old_agent", "detail": message, "message": message}


def wants_v0(headers: dict[str, str], params: dict[str, str]) -> bool:
    """Whether a ``GET /events`` caller wants the original's dialect."""
    return params.get("format") == V0 or headers.get(FORMAT_HEADER, "").lower() == V0


def bridge_url_from(headers: dict[str, str], scope: dict[str, Any]) -> str:
    from ..conf import edge_settings

    if edge_settings.PUBLIC_URL:
        return edge_settings.PUBLIC_URL.rstrip("/")
    host = headers.get("host") or "localhost"
    return f"{scope.get('scheme', 'http')}://{host}"


def _topology_data(user_id: int | None, url: str) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from ..api.views import edge_list_data

    user = get_user_model().objects.filter(pk=user_id).first() if user_id is not None else None
    return edge_list_data(user=user, url=url)


topology_data = database_sync_to_async(_topology_data, thread_sensitive=False)


def v0_line(topic: str, data: Any) -> str:
    return f"data: {json.dumps({'topic': topic, 'data': data}, cls=DjangoJSONEncoder, separators=(',', ':'))}\n\n"


def v0_notifications(event: dict[str, Any]) -> list[str]:
    """Our notification (``{id, edge, plugin, topic, data, ts}``) as the original's lines."""
    edge, plugin, topic, data = event.get("edge"), event.get("plugin"), event.get("topic"), event.get("data")
    batched = isinstance(data, dict) and isinstance(data.get("tasks"), list)
    if plugin == "rhapsody" and topic == "task_status" and batched:
        return [v0_line("notification", {"edge": edge, "plugin": plugin, "topic": topic, "data": task})
                for task in cast("dict[str, Any]", data)["tasks"]]
    return [v0_line("notification", {"edge": edge, "plugin": plugin, "topic": topic, "data": data})]


class V0Stream:
    """An :class:`~bridge_app.streams.sse.EventStream` in the original's dialect. The inner stream
    does the subscribing, filtering and access checks; this rewrites what it yields (each
    chunk it yields is whole SSE blocks). ``id:`` fields are dropped (the original had
    none), so there is no replay: the original SDK could not ask for one."""

    def __init__(self, stream: Any, url: str) -> None:
        self.stream = stream
        self.url = url

    async def _snapshot(self) -> str:
        try:
            return v0_line("topology", await topology_data(self.stream.principal.user_id, self.url))
        except Exception:
            log.warning("topology snapshot for a v0 event stream failed", exc_info=True)
            return ""

    async def body(self) -> AsyncGenerator[bytes, None]:
        inner = self.stream.body()
        first = True
        try:
            async for chunk in inner:
                out: list[str] = []
                topology = False
                for block in chunk.decode("utf-8").split("\n\n"):
                    if not block:
                        continue
                    fields: dict[str, str] = {}
                    comment = False
                    for line in block.split("\n"):
                        if line.startswith(":"):
                            comment = True
                            continue
                        key, _, value = line.partition(":")
                        fields[key] = value[1:] if value.startswith(" ") else value
                    if "retry" in fields and first:
                        out.append(f"retry: {fields['retry']}\n\n")
                        first = False
                        topology = True  # the snapshot the original sent first
                        continue
                    if "data" not in fields:
                        if comment:
                            out.append(block + "\n\n")
                        continue  # an id-only block: nothing in the original's dialect
                    kind = fields.get("event", "message")
                    if kind == "topology":
                        topology = True
                        continue
                    if kind == "notification":
                        try:
                            out.extend(v0_notifications(json.loads(fields["data"])))
                        except ValueError:
                            continue
                if topology:
                    out.append(await self._snapshot())
                if out:
                    yield "".join(out).encode("utf-8")
        finally:
            await inner.aclose()
