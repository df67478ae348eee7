"""How an MCP tool reaches a plugin: through :func:`bridge_app.calls.proxy.proxy_call`, exactly as
a REST call does.

Every plugin call a tool makes gets its own :class:`~bridge_app.calls.proxy.CallInfo` (with the
MCP client and the tool in ``client``), passes the proxy's role check, read-only rule and
rate limits (``call_guards``), the strict audit gate where it is on, and is handed to the
call observers (audit trail, metrics) when it ends. Nothing here decides who may do what.

Plugin sessions: routes with ``{sid}`` need one. A session belongs to the calling user on
the agent (not to a bridge process), so each process keeps one per (user, edge, plugin)
and opens a new one when the agent says it is unknown or expired.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from ..access.tokens import bearer_from_header
from ..calls.errors import AppError
from ..calls.proxy import (
    CallInfo,
    ProxyError,
    ProxyTarget,
    answer_gates,
    gate_answer,
    new_request_id,
    notify_observers,
    proxy_call,
)
from ..conf import edge_settings
from ..core.directory import Principal, directory

log = logging.getLogger(__name__)

# The ASGI scope key under which bridge_app.mcp.app leaves the authenticated caller.
PRINCIPAL_KEY = "radical_edge.principal"
CLIENT_INFO_KEY = "io.modelcontextprotocol/clientInfo"
_SESSION_ERRORS = frozenset({"unknown_session", "session_expired"})
# Most bytes of one plugin answer a tool reads (answers are JSON for a model, not files).
MAX_ANSWER_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class RawAnswer:
    """A plugin's answer as bytes (``plugin_call(..., raw=True)``): file downloads."""

    status: int
    headers: dict[str, str]
    body: bytes


class PluginError(AppError, ToolError):
    """A refused or failed plugin call, as a tool error a model can act on: the bridge's or
    the plugin's ``error`` code and ``detail``."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(status, error, detail, message=f"{error}: {detail} (HTTP {status})")


@dataclass(frozen=True)
class Caller:
    """Who calls (the token's principal) and through what (MCP client and tool), for the
    proxy and the audit trail."""

    principal: Principal
    client: str


async def caller_of(ctx: Context, tool: str) -> Caller:
    """The caller of this request: authenticated by ``app.McpApp`` before the SDK ran."""
    request = ctx.request_context.request
    scope = getattr(request, "scope", None) or {}
    principal = scope.get(PRINCIPAL_KEY)
    if principal is None:
        # Defensive: a request that did not pass McpApp (never in the bridge's router).
        headers = getattr(request, "headers", None) or {}
        token = bearer_from_header(headers.get("authorization"))
        principal = await directory.principal(token) if token else None
    if principal is None:
        raise ToolError("unauthorized: send 'Authorization: Bearer <API token>'")
    return Caller(principal, f"mcp {client_name(ctx)} tool={tool}"[:200])


def client_name(ctx: Context) -> str:
    """The MCP client's name and version as it introduced itself (initialize, or the
    per-request client info of stateless protocol versions), else its User-Agent."""
    rc = ctx.request_context
    params = getattr(rc.session, "client_params", None)
    info = getattr(params, "client_info", None)
    if info is not None:
        return f"{info.name} {info.version}".strip()
    meta = rc.meta
    raw = None
    if meta is not None:
        raw = meta.get(CLIENT_INFO_KEY) if isinstance(meta, dict) else getattr(meta, "client_info", None)
    if isinstance(raw, dict) and raw.get("name"):
        return f"{raw.get('name')} {raw.get('version', '')}".strip()
    headers = getattr(rc.request, "headers", None) or {}
    return headers.get("user-agent", "unknown client")[:100]


# (user id, edge, plugin) → sid. Two first calls at once may both open one; the one not
# kept expires by the agent's idle TTL.
_sessions: dict[tuple[int, str, str], str] = {}
MAX_SESSIONS = 10_000


async def plugin_call(caller: Caller, edge: str, plugin: str, method: str, route: str, *,
                      query: str = "", body: Any = None, headers: dict[str, str] | None = None,
                      timeout: float | None = None, content: bytes | None = None, raw: bool = False) -> Any:
    """Call ``method route`` of ``plugin`` on ``edge`` as ``caller``; the decoded JSON answer.
    A ``{sid}`` in ``route`` is filled with the caller's session (opened when needed).
    ``content`` is sent as the body as it is (``application/octet-stream``) instead of a
    JSON ``body``; with ``raw`` a successful answer is a :class:`RawAnswer` (bytes and
    headers) rather than decoded JSON. Raises :class:`PluginError` for every refusal or
    error answer."""
    for attempt in (1, 2):
        path = route
        key = (caller.principal.user_id, edge, plugin)
        if "{sid}" in route:
            sid = _sessions.get(key)
            if sid is None:
                opened = await _call(caller, edge, plugin, "POST", "register_session", body={})
                if len(_sessions) >= MAX_SESSIONS:
                    _sessions.clear()
                sid = _sessions[key] = str(opened["sid"])
            path = route.replace("{sid}", sid)
        try:
            return await _call(caller, edge, plugin, method, path, query=query, body=body, headers=headers,
                               timeout=timeout, content=content, raw=raw)
        except PluginError as exc:
            if "{sid}" in route and exc.error in _SESSION_ERRORS and attempt == 1:
                _sessions.pop(key, None)
                continue
            raise
    raise AssertionError("unreachable")


async def _call(caller: Caller, edge: str, plugin: str, method: str, path: str, *, query: str = "",
                body: Any = None, headers: dict[str, str] | None = None, timeout: float | None = None,
                content: bytes | None = None, raw: bool = False) -> Any:
    target = ProxyTarget(edge, plugin, path)
    info = CallInfo(new_request_id(), caller.principal, target, method, client=caller.client)
    sent = {"accept": "application/json", "user-agent": caller.client[:200], **(headers or {})}
    payload = b""
    if body is not None:
        payload = json.dumps(body).encode("utf-8")
        sent["content-type"] = "application/json"
    elif content is not None:
        payload = content
        sent["content-type"] = "application/octet-stream"
    if raw:
        sent["accept"] = "*/*"
    if timeout is not None:
        sent["x-request-timeout"] = f"{min(timeout, edge_settings.MAX_REQUEST_TIMEOUT):g}"
    try:
        reply = await proxy_call(principal=caller.principal, target=target, method=method, query=query,
                                 headers=sent, body=payload, info=info)
        data = reply.body
        if reply.stream is not None:
            data = await _read_stream(reply)
        info.status = reply.status
        refused = await gate_answer(info) if answer_gates else None
        if refused is not None:
            raise refused
    except ProxyError as exc:
        info.status, info.error = exc.status, exc.error
        notify_observers(info)
        raise PluginError(exc.status, exc.error, exc.detail) from None
    except DatabaseError as exc:
        log.warning("database unavailable on an MCP call: %s", exc)
        info.status, info.error = 503, "bridge_unavailable"
        notify_observers(info)
        raise PluginError(503, "bridge_unavailable", "the bridge cannot reach its database; retry shortly") from None
    notify_observers(info)
    if raw and reply.status < 400:
        return RawAnswer(reply.status, {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in reply.headers},
                         data)
    try:
        answer = json.loads(data) if data else None
    except ValueError:
        answer = data.decode("utf-8", "replace")
    if reply.status >= 400:
        error = answer.get("error") if isinstance(answer, dict) else None
        detail = answer.get("detail") if isinstance(answer, dict) else None
        raise PluginError(reply.status, str(error or "plugin_error"), str(detail or answer or "no detail"))
    return answer


async def _read_stream(reply) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        async for piece in reply.stream:
            size += len(piece)
            if size > MAX_ANSWER_BYTES:
                raise ProxyError(502, "answer_too_large",
                                 f"the plugin's answer exceeds {MAX_ANSWER_BYTES} bytes; ask for less")
            parts.append(piece)
    finally:
        await reply.stream.aclose()
    return b"".join(parts)
