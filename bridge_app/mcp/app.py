"""ASGI entry of the MCP server: ``/mcp`` (Streamable HTTP) and its OAuth protected-resource
metadata (RFC 9728) at ``/.well-known/oauth-protected-resource/mcp``.

Authentication is the bridge's: an API token as ``Authorization: Bearer``, looked up in the
proxy's ``directory`` (no database query on a cache hit). The principal is put into the ASGI
scope for the tools (``calls.caller_of``); a missing or bad token is a 401 whose
``WWW-Authenticate`` points at the metadata, as the MCP authorization spec asks.

Stateless: the SDK's session manager runs in stateless HTTP mode, so no request depends on
state kept by the process that served an earlier one. Any bridge process of a scaled
deployment serves any request, behind any load balancer, without sticky sessions; what a
tool needs between calls lives on the agent (jobs, per-user plugin sessions) or in the
database. The session manager is started per event loop on the first request (daphne has
no lifespan) and ends with the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError

from ..access.tokens import bearer_from_header
from ..calls import throttling
from ..calls.hosts import host_allowed
from ..calls.proxy import CallInfo, notify_observers, request_id_from
from ..calls.responses import cors_headers, send_response
from ..conf import edge_settings
from ..core.directory import directory
from .calls import PRINCIPAL_KEY

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
METADATA_PATHS = frozenset({"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"})


class _Runner:
    """One SDK server and session manager per event loop."""

    def __init__(self) -> None:
        from mcp.server.transport_security import TransportSecuritySettings

        from .server import build_server

        self.server = build_server()
        # The bridge checks Host itself (ALLOWED_HOSTS) and takes only bearer tokens (no
        # cookies), so the SDK's localhost-only DNS-rebinding guard would only refuse
        # legitimate deployments.
        self.server.streamable_http_app(
            stateless_http=True, transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        self.manager = self.server.session_manager
        self.ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="mcp-session-manager")

    async def _run(self) -> None:
        try:
            async with self.manager.run():
                self.ready.set()
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the MCP session manager stopped")


_runners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Runner] = weakref.WeakKeyDictionary()


async def _runner() -> _Runner:
    loop = asyncio.get_running_loop()
    runner = _runners.get(loop)
    if runner is None or runner.task.done():
        runner = _runners[loop] = _Runner()
    await runner.ready.wait()
    return runner


class McpApp:
    """ASGI middleware: serves ``/mcp`` and its metadata, hands everything else on."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not edge_settings.MCP_ENABLED:
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == MCP_PATH or path == MCP_PATH + "/":
            cors = _cors_headers(scope)
            if scope["method"] == "OPTIONS":  # a browser's preflight: no credentials to check
                return await _preflight(send, cors)
            if cors:
                send = _with_headers(send, cors)
            return await self._serve(scope, receive, send)
        if path in METADATA_PATHS:
            return await self._metadata(scope, send)
        return await self.app(scope, receive, send)

    async def _serve(self, scope, receive, send) -> None:
        from ..core.rpc import get_inbox

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if not host_allowed(headers):
            return await _json(send, 400, {"error": "bad_host",
                                           "detail": "this host name is not served here (ALLOWED_HOSTS)"})
        token = bearer_from_header(headers.get("authorization"))
        address = throttling.client_address(scope)
        if token is not None:
            # Token guessing is slowed here as on the proxy and /events, before any lookup.
            guessing = throttling.auth_failures.refusal(address)
            if guessing is not None:
                _audit_refusal(scope, headers, guessing.status, guessing.error)
                return await _json(send, guessing.status, {"error": guessing.error, "detail": guessing.detail},
                                   [(k.encode("latin-1"), v.encode("latin-1")) for k, v in guessing.headers.items()])
        try:
            await get_inbox()  # subscribes this process to cache invalidations first
            principal = await directory.principal(token) if token else None
        except DatabaseError as exc:
            log.warning("database unavailable on /mcp: %s", exc)
            return await _json(send, 503, {"error": "bridge_unavailable",
                                           "detail": "the bridge cannot reach its database; retry shortly"})
        if principal is None:
            if token is not None:
                throttling.auth_failures.failed(address)
            _audit_refusal(scope, headers, 401, "unauthorized")
            detail = "invalid, expired or revoked API token" if token else "send 'Authorization: Bearer <API token>'"
            challenge = (f'Bearer realm="radical-edge", error="invalid_token", error_description="{detail}", '
                         f'resource_metadata="{_base_url(scope, headers)}/.well-known/oauth-protected-resource/mcp"')
            return await _json(send, 401, {"error": "unauthorized", "detail": detail},
                               [(b"www-authenticate", challenge.encode("latin-1"))])
        runner = await _runner()
        await runner.manager.handle_request({**scope, PRINCIPAL_KEY: principal}, receive, send)

    async def _metadata(self, scope, send) -> None:
        from mcp.shared.auth import ProtectedResourceMetadata

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if not host_allowed(headers):
            return await _json(send, 400, {"error": "bad_host",
                                           "detail": "this host name is not served here (ALLOWED_HOSTS)"})
        base = _base_url(scope, headers)
        # The bridge issues its API tokens itself (portal: API tokens; api_token_create), so
        # it names itself as the authorization server; scopes are the tokens' two scopes.
        metadata = ProtectedResourceMetadata(
            # pydantic validates and converts these str to AnyHttpUrl at runtime.
            resource=f"{base}{MCP_PATH}", authorization_servers=[base],  # type: ignore[arg-type, list-item]
            scopes_supported=["read", "full"],
            resource_name="Radical Edge bridge (MCP)",
        )
        body = metadata.model_dump(mode="json", exclude_none=True)
        await _json(send, 200, body, [(b"cache-control", b"public, max-age=3600")])


def _audit_refusal(scope: dict[str, Any], headers: dict[str, str], status: int, error: str) -> None:
    """A refused /mcp request is in the audit trail, as the proxy's refusals are."""
    info = CallInfo(request_id_from(headers), None, None, scope["method"], status=status, error=error,
                    client=f"mcp {headers.get('user-agent', 'unknown client')}"[:200])
    notify_observers(info)


def _cors_headers(scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """CORS for browser-based MCP clients, closed unless RADICAL_CORS_ALLOWED_ORIGINS lists
    the origin (as for the proxy). No cookies are involved: the token is the credential."""
    origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
    return cors_headers(origin, expose=b"mcp-session-id, mcp-protocol-version, www-authenticate")


async def _preflight(send, cors: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-length", b"0")]
    if cors:
        headers += [*cors, (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
                    (b"access-control-allow-headers",
                     b"authorization, content-type, accept, mcp-protocol-version, mcp-session-id, last-event-id"),
                    (b"access-control-max-age", b"600")]
    await send_response(send, 204, headers)


def _with_headers(send, extra: list[tuple[bytes, bytes]]):
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


def _base_url(scope: dict[str, Any], headers: dict[str, str]) -> str:
    public = (edge_settings.PUBLIC_URL or "").rstrip("/")
    if public:
        return public
    scheme = scope.get("scheme", "http")
    from django.conf import settings

    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header and headers.get("x-forwarded-proto") == "https":
        scheme = "https"
    host = headers.get("host") or "localhost"
    return f"{scheme}://{host}"


async def _json(send, status: int, body: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode("utf-8")
    await send_response(send, status, [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"), *extra], data)
