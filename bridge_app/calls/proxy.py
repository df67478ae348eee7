"""The proxy path: ``/{edge}/{plugin}/{route}`` (and ``/api/v1/edges/{edge}/{plugin}/{route}``).

:class:`ProxyApp` is a lean ASGI handler in front of Django. It serves proxy calls that
carry an ``Authorization: Bearer`` API token without entering Django's request cycle,
whose thread hops cost several times the proxy's own work (docs/ARCHITECTURE.md, "Where
the time goes"). Everything else, and proxy calls from browser sessions, goes to Django,
where ``api.proxy_views`` calls the same :func:`proxy_call`.

:func:`proxy_call` carries a proxied call in two steps. :func:`authorize` finds the edge
(from the in-process directory, not the database) and applies the access policy
(``policy.py``: the caller's role on it, whether the route is read-only), suspension,
liveness and the guards. :func:`forward` sends the request to the edge's channel with this
process's inbox as ``reply_to``, and waits for the answer, the timeout, the caller's
disconnect, or the edge's departure, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from channels.exceptions import ChannelFull
from django.db import DatabaseError

from edge_agent import protocol
from edge_agent.router import MethodNotAllowed, RouteNotFound

from .. import messages
from ..access import policy
from ..access.tokens import bearer_from_header, session_key_from_cookie
from ..conf import edge_settings
from ..core import local, processes
from ..core.directory import EdgeEntry, Principal, directory
from ..core.hooks import answer_gates, call_guards, call_observers
from ..core.rpc import EDGE_MOVED, CallFailed, get_inbox
from ..models import EDGE_NAME_RE, RESERVED_NAMES
from . import throttling
from .errors import ProxyError as ProxyError  # re-exported: proxy.ProxyError stays
from .hosts import host_allowed
from .responses import PROXY_EXPOSED_HEADERS, base_headers, cors_headers, request_headers, send_error
from .responses import SECURITY_HEADERS as SECURITY_HEADERS  # re-exported: proxy.SECURITY_HEADERS stays
from .responses import error_body as error_body  # re-exported: proxy.error_body stays

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/edges/"
# A call that is still waiting after this many seconds starts watching for the caller's
# disconnect (so a caller that gives up cancels the edge's work); quick calls never pay for it.
DISCONNECT_WATCH_AFTER = 1.0
# A request that never reached its agent (the connection had just ended) is sent again where
# the edge is connected now, at most this many times, waiting at most RELOCATE_WAIT seconds
# each for the edge to be connected again.
MAX_RELOCATIONS = 3
RELOCATE_WAIT = 5.0
# Request ids: a random per-process prefix and a counter; unique across processes and
# far cheaper than uuid4 (which reads the OS random source on every call).
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):x}"

_EDGE_NAME = re.compile(EDGE_NAME_RE)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# Request headers passed on to plugins. Credentials (Authorization, Cookie) and any
# identity headers a caller might forge are never forwarded: the agent learns who calls
# from the ``caller`` field, which only the bridge sets.
FORWARD_REQUEST_HEADERS = frozenset({
    "content-type", "accept", "accept-language", "x-request-id", "user-agent", "idempotency-key",
    "x-radical-edge-format",  # v0: the original RADICAL Edge's answer shapes (docs/MIGRATING.md)
    # Conditional and partial downloads (RFC 9110) and resumable uploads (tus 1.0.0).
    "range", "if-range", "if-none-match", "if-match", "if-modified-since",
    "tus-resumable", "upload-length", "upload-offset", "upload-metadata", "upload-checksum",
    "upload-defer-length", "repr-digest",
})
# Response headers a plugin may set. No Set-Cookie (it would land on the bridge's origin),
# no hop-by-hop headers.
FORWARD_RESPONSE_HEADERS = frozenset({
    "content-type", "content-disposition", "cache-control", "etag", "last-modified", "retry-after",
    "allow", "content-language",
    "accept-ranges", "content-range", "location",
    "tus-resumable", "tus-version", "tus-extension", "tus-max-size", "tus-checksum-algorithm",
    "upload-length", "upload-offset", "upload-metadata", "upload-expires",
})
@dataclass
class ProxyReply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None
    length: int | None = None
    request_id: str = ""


@dataclass
class ProxyTarget:
    edge: str
    plugin: str
    route: str


@dataclass
class CallInfo:
    """What the audit trail and metrics learn about one call."""

    request_id: str
    principal: Principal | None
    target: ProxyTarget | None
    method: str
    started: float = field(default_factory=time.monotonic)
    status: int = 0
    error: str = ""  # the bridge's own error code, when it answered the call itself
    bytes_in: int = 0
    bytes_out: int = 0
    audited: bool = False  # its audit record was written before the answer (strict mode)
    client: str = ""  # how the call came when not plain REST (the MCP client and tool)


async def gate_answer(info: CallInfo) -> ProxyError | None:
    """Pass the call through ``answer_gates``: the error to answer instead, if one refuses."""
    for gate in answer_gates:
        try:
            await gate(info)
        except ProxyError as exc:
            info.status, info.error = exc.status, exc.error
            return exc
    return None


def parse_target(path: str) -> ProxyTarget | None:
    """The (edge, plugin, route) a path addresses, or None if it is not a proxy path."""
    if path.startswith(API_PREFIX):
        parts = path[len(API_PREFIX):].split("/", 2)
    else:
        parts = path[1:].split("/", 2)
        if parts[0] in RESERVED_NAMES:
            return None
    if len(parts) < 3 or not parts[0] or not parts[1] or not parts[2]:
        return None
    return ProxyTarget(parts[0], parts[1], parts[2])


BodySource = Callable[[], AsyncIterator[bytes]]


@dataclass
class Authorized:
    """A call ``authorize`` let through: who calls what, the edge's cached entry and the
    caller's role on it."""

    principal: Principal
    target: ProxyTarget
    method: str
    edge: EdgeEntry
    role: str | None  # never None: policy.may_see(role) held


async def proxy_call(
    *,
    principal: Principal,
    target: ProxyTarget,
    method: str,
    query: str,
    headers: dict[str, str],
    body: bytes | None,
    body_stream: AsyncIterator[bytes] | None = None,
    body_length: int | None = None,
    info: CallInfo,
    watch_disconnect: Callable[[], Awaitable[Any]] | None = None,
) -> ProxyReply:
    """Carry one call to its edge and return the answer (see the module docstring):
    :func:`authorize`, then :func:`forward`.

    The body is either ``body`` (all of it) or ``body_stream`` (pieces, with
    ``body_length`` if known). ``watch_disconnect()`` returns when the caller goes away.
    Raises :class:`ProxyError` for every answer the bridge gives itself.
    """
    # The inbox subscribes this process to cache invalidations: it must exist before
    # anything is read from the directory's caches.
    inbox = await get_inbox()
    allowed = await authorize(principal=principal, target=target, method=method)
    return await forward(allowed, inbox, query=query, headers=headers, body=body, body_stream=body_stream,
                         body_length=body_length, info=info, watch_disconnect=watch_disconnect)


async def authorize(*, principal: Principal, target: ProxyTarget, method: str) -> Authorized:
    """Whether ``principal`` may make this call now, by the access policy (``policy.py``)
    over the directory's cached entry: the edge, plugin and route exist and the caller may
    see them (404 alike, so names cannot be probed), may call the route (403), the edge is
    not suspended or offline (503), and no guard (rate limits) refuses. Raises ProxyError."""
    edge = await directory.edge(target.edge) if _EDGE_NAME.match(target.edge) else None
    edge, role = _admit(principal, target, method, edge)
    for guard in call_guards:
        pending = guard(principal, edge, target, role)
        if pending is not None:
            await pending
    return Authorized(principal, target, method, edge, role)


def _admit(principal: Principal, target: ProxyTarget, method: str,
           edge: EdgeEntry | None) -> tuple[EdgeEntry, str]:
    """``edge`` (a directory entry, or None) and the caller's role on it if the access policy lets
    this call through now, else ProxyError: the checks of :func:`authorize` but the guards,
    run again on the fresh entry when a call follows its edge elsewhere."""
    role = edge.role_for(principal) if edge is not None else None
    if edge is None or not policy.may_see(role):
        # Unknown and forbidden look the same, so edge names cannot be probed.
        raise ProxyError(404, "unknown_edge", f"no edge named '{target.edge}'")
    plugin = edge.plugins.get(target.plugin)
    if plugin is None:
        raise ProxyError(404, "unknown_plugin", f"edge '{edge.name}' has no plugin '{target.plugin}'")
    try:
        route, _ = plugin.router.match(method, target.route)
    except RouteNotFound:
        raise ProxyError(404, "unknown_route", f"plugin '{target.plugin}' has no route '{target.route}'") from None
    except MethodNotAllowed as exc:
        raise ProxyError(405, "method_not_allowed", f"'{target.route}' allows {', '.join(exc.allowed)}",
                         {"allow": ", ".join(exc.allowed)}) from None
    if not route.readonly:
        if not policy.may_write(role):
            raise ProxyError(403, "forbidden", f"viewers of edge '{edge.name}' may only use read-only routes")
        if principal.read_only:
            raise ProxyError(403, "forbidden", "this API token is read-only")
    if edge.suspended:
        raise ProxyError(503, "edge_suspended", f"edge '{edge.name}' is suspended")
    if edge.ended and not edge.online:
        raise ProxyError(410, "edge_ended", edge.ended)
    if not edge.online:
        seen = f" (last seen {_ago(edge.last_seen)})" if edge.last_seen else ""
        raise ProxyError(503, "edge_offline", f"edge '{edge.name}' is not connected{seen}")
    if processes.registry is not None and processes.registry.is_dead(messages.process_of(edge.channel_name)):
        raise ProxyError(503, "edge_offline",
                         f"edge '{edge.name}' is reconnecting: the bridge process that held it stopped")
    return edge, role


async def forward(allowed: Authorized, inbox: Any, *, query: str, headers: dict[str, str], body: bytes | None,
                  body_stream: AsyncIterator[bytes] | None, body_length: int | None, info: CallInfo,
                  watch_disconnect: Callable[[], Awaitable[Any]] | None) -> ProxyReply:
    """Send an authorized call to its edge's channel with this process's ``inbox`` as
    ``reply_to``, and wait for the answer's head, the timeout, the caller's disconnect or
    the edge's departure, whichever comes first (the body as for :func:`proxy_call`).
    Raises ProxyError."""
    principal, target, method = allowed.principal, allowed.target, allowed.method
    edge, role = allowed.edge, allowed.role
    timeout = _timeout(headers.get("x-request-timeout"))
    unstable = processes.registry is not None and processes.registry.unstable()
    if unstable:
        timeout = min(timeout, processes.UNSTABLE_TIMEOUT)
    layer = inbox.layer
    req_id = new_request_id()
    frame: dict[str, Any] = {
        "type": protocol.REQUEST,
        "req_id": req_id,
        "method": method,
        "plugin": target.plugin,
        "path": target.route,
        "query": query,
        "headers": {k: v for k, v in headers.items() if k in FORWARD_REQUEST_HEADERS},
        "caller": {"user": principal.username, "uid": principal.user_id, "role": role, "scope": principal.scope},
    }
    frame["headers"]["x-request-id"] = info.request_id
    streamed = False
    if body_stream is None:
        info.bytes_in = len(body or b"")
        streamed = protocol.put_body(frame, body or b"")
    else:
        frame["stream"] = True
        if body_length is not None:
            frame["length"] = body_length
        streamed = True
    call = None
    relocations = 0
    try:
        while True:
            call = inbox.open(req_id, edge.channel_name)
            try:
                if inbox.channel_down(edge.channel_name):
                    # Its connection has ended: this process would wait for the timeout.
                    call.fail(503, EDGE_MOVED, f"edge '{edge.name}' disconnected")
                else:
                    await _send_request(layer, edge, call, frame, inbox, body, body_stream, streamed, timeout, info)
                head = await _wait_head(call, timeout, watch_disconnect, layer, edge.channel_name, edge.name)
            except ProxyError as exc:
                if exc.error == EDGE_MOVED:
                    # The request never reached the agent: send it again where the edge is
                    # connected now (a drained or restarted process's edge reconnects
                    # elsewhere), unless its body was the caller's stream, already spent.
                    inbox.close(req_id)
                    call = None
                    if body_stream is not None or relocations >= MAX_RELOCATIONS:
                        raise ProxyError(503, "edge_offline",
                                         f"edge '{edge.name}' is reconnecting; retry shortly") from None
                    relocations += 1
                    edge = await _relocated(inbox, allowed, edge)
                    req_id = frame["req_id"] = new_request_id()
                    continue
                if unstable and exc.status == 504:
                    raise ProxyError(503, "bridge_unavailable",
                                     "the bridge's channel layer is recovering; retry shortly") from None
                raise
            break
        status = head["status"]
        if not 200 <= status <= 599:
            # Not a final answer HTTP can carry (1xx would be an interim response, 101 a
            # protocol switch): the agent is broken or hostile.
            await _cancel(layer, edge.channel_name, req_id, "invalid status")
            raise ProxyError(502, "bad_agent_response",
                             f"edge '{edge.name}' answered with an invalid HTTP status {status}")
        reply = ProxyReply(status=status, headers=_response_headers(head["headers"]),
                           request_id=info.request_id)
        if head.get("stream"):
            length = head.get("length")
            reply.length = length if isinstance(length, int) else None
            reply.stream = _stream_body(call, inbox, timeout, layer, edge.channel_name, info)
            call = None  # the stream owns the call now
        else:
            reply.body = head["body"]
            info.bytes_out = len(reply.body)
        return reply
    finally:
        if call is not None:
            inbox.close(req_id)


async def _send_request(layer, edge, call, frame: dict[str, Any], inbox, body: bytes | None,
                        body_stream: AsyncIterator[bytes] | None, streamed: bool, timeout: float,
                        info: CallInfo) -> None:
    """Send the request frame (and the body's chunks, if streamed) to the edge's channel."""
    try:
        await local.send(layer, edge.channel_name,
                         messages.edge_request(call.req_id, inbox.channel, protocol.encode(frame)))
        if streamed:
            source = body_stream if body_stream is not None else _pieces(body or b"")
            info.bytes_in = await _send_body(layer, edge.channel_name, call, source, timeout)
    except ChannelFull:
        raise ProxyError(503, "edge_busy", f"edge '{edge.name}' is overloaded; retry shortly") from None
    except ProxyError:
        await _cancel(layer, edge.channel_name, call.req_id, "upload refused")
        raise
    except Exception as exc:
        log.warning("channel layer send failed: %s", exc)
        raise ProxyError(503, "bridge_unavailable",
                         "the bridge cannot reach its channel layer; retry shortly") from None


async def _relocated(inbox, allowed: Authorized, edge):
    """The edge's entry once it is connected again at another channel than ``edge``'s (read
    from the database, not the cache) and the access policy still admits the call there
    (:func:`_admit`: a grant revoked or an edge suspended meanwhile answers as it would
    have at first); 503 edge_offline if that takes over RELOCATE_WAIT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELOCATE_WAIT
    while True:
        directory.invalidate("edge", edge.name)
        fresh = await directory.edge(edge.name)
        try:
            fresh, _ = _admit(allowed.principal, allowed.target, allowed.method, fresh)
        except ProxyError as exc:
            if exc.error != "edge_offline":
                raise
        else:
            if fresh.channel_name != edge.channel_name and not inbox.channel_down(fresh.channel_name):
                return fresh
        if loop.time() >= deadline:
            raise ProxyError(503, "edge_offline", f"edge '{edge.name}' is reconnecting; retry shortly")
        await asyncio.sleep(0.1)


class _HeadTimer:
    """The one timer of a call waiting for its answer's head: it fires after
    DISCONNECT_WATCH_AFTER seconds to start watching for the caller's disconnect (a task),
    and again at the deadline to fail the call with 504. :meth:`stop` leaves no reference
    cycle behind: full collections are rare in the bridge (collector.py), and a closure that
    re-armed itself kept each call's objects for one (2 KB of memory a call)."""

    __slots__ = ("call", "deadline", "edge_name", "handle", "loop", "timeout", "watch_disconnect", "watcher")

    def __init__(self, loop, call, timeout: float, watch_disconnect, edge_name: str) -> None:
        self.loop, self.call, self.timeout, self.edge_name = loop, call, timeout, edge_name
        self.watch_disconnect = watch_disconnect
        self.watcher: asyncio.Task | None = None
        self.deadline = loop.time() + timeout
        first = min(timeout, DISCONNECT_WATCH_AFTER) if watch_disconnect is not None else timeout
        self.handle: asyncio.TimerHandle | None = loop.call_later(first, self.fire)

    def fire(self) -> None:
        self.handle = None
        if self.loop.time() >= self.deadline - 0.001:  # (timers may fire a little early)
            self.call.fail(504, "edge_timeout", f"edge '{self.edge_name}' did not answer within {self.timeout:g}s")
            return
        if self.watch_disconnect is not None and self.watcher is None:
            self.watcher = self.loop.create_task(self._watch())
        self.handle = self.loop.call_at(self.deadline, self.fire)

    async def _watch(self) -> None:
        await self.watch_disconnect()
        self.call.fail(499, "client_closed", "the caller disconnected")

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None


async def _wait_head(call, timeout: float, watch_disconnect, layer, channel: str, edge_name: str) -> dict:
    """Wait for the answer's head, the timeout or the caller's disconnect (_HeadTimer: one
    timer, no task, for a quick call)."""
    timer = _HeadTimer(asyncio.get_running_loop(), call, timeout, watch_disconnect, edge_name)
    try:
        return await call.head
    except CallFailed as exc:
        if exc.status in (499, 504):
            await _cancel(layer, channel, call.req_id, "timeout" if exc.status == 504 else "caller went away")
        raise ProxyError(exc.status, exc.error, exc.detail) from None
    except asyncio.CancelledError:
        await _cancel(layer, channel, call.req_id, "caller went away")
        raise
    finally:
        timer.stop()


async def _stream_body(call, inbox, timeout: float, layer, channel: str, info: CallInfo) -> AsyncGenerator[bytes, None]:
    """Yield a streamed answer body; the call stays registered until it ends.

    Flow control: the agent sends at most STREAM_WINDOW chunks ahead; every half window
    that the client has taken (the code after ``yield`` runs once the previous piece was
    sent) grants the agent that many more, so a slow client never makes us buffer a body.
    """
    completed = False
    half = max(1, edge_settings.STREAM_WINDOW // 2)
    taken = 0
    try:
        chunks = call.body_chunks()
        while True:
            try:
                piece = await asyncio.wait_for(chunks.__anext__(), timeout)
            except StopAsyncIteration:
                completed = True
                return
            info.bytes_out += len(piece)
            yield piece
            taken += 1
            if taken % half == 0:
                await _layer_send_quietly(layer, channel, messages.edge_credit(call.req_id, half))
    except asyncio.TimeoutError:
        raise CallFailed(504, "edge_timeout", "the edge stopped sending the body") from None
    finally:
        inbox.close(call.req_id)
        if not completed:
            await _cancel(layer, channel, call.req_id, "body not consumed")


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _send_body(layer, channel: str, call, source: AsyncIterator[bytes], timeout: float) -> int:
    """Forward an upload in chunks of CHUNK_SIZE, at most STREAM_WINDOW ahead of what the
    agent has granted; returns the bytes read. 413 past the limit. Stops early when the
    call ends meanwhile (the agent answered already, or went away)."""
    size = edge_settings.CHUNK_SIZE
    limit = edge_settings.MAX_BODY_BYTES
    call.credits = edge_settings.STREAM_WINDOW
    buf = bytearray()
    total = 0
    seq = 0

    async def send(data: bytes, last: bool) -> bool:
        nonlocal seq
        if call.credits <= 0:
            try:
                await asyncio.wait_for(call.wait_credit(), timeout)
            except asyncio.TimeoutError:
                raise ProxyError(504, "edge_timeout", "the edge stopped accepting the request body") from None
        if call.head.done():
            return False
        call.credits -= 1
        await _send_chunk(layer, channel, call.req_id, seq, data, last)
        seq += 1
        return True

    async for piece in source:
        total += len(piece)
        if total > limit:
            raise ProxyError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")
        buf += piece
        while len(buf) >= size:
            if not await send(bytes(buf[:size]), False):
                return total
            del buf[:size]
    await send(bytes(buf), True)
    return total


async def _send_chunk(layer, channel: str, req_id: str, seq: int, data: bytes, last: bool) -> None:
    message = messages.edge_request_chunk(req_id, seq, data, last)
    for attempt in range(50):
        try:
            await local.send(layer, channel, message)
            return
        except ChannelFull:
            # Only if the consumer's channel is shared with many busy streams.
            await asyncio.sleep(0.01 * min(attempt + 1, 10))
    raise ChannelFull(channel)


async def _layer_send_quietly(layer, channel: str, message: dict) -> None:
    try:
        await local.send(layer, channel, message)
    except Exception:
        pass


async def _cancel(layer, channel: str, req_id: str, reason: str) -> None:
    await _layer_send_quietly(layer, channel, messages.edge_cancel(req_id, reason))


def _timeout(value: str | None) -> float:
    default = edge_settings.REQUEST_TIMEOUT
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ProxyError(400, "bad_timeout", "X-Request-Timeout must be a number of seconds") from None
    if not 0 < seconds <= edge_settings.MAX_REQUEST_TIMEOUT:
        raise ProxyError(400, "bad_timeout",
                         f"X-Request-Timeout must be between 0 and {edge_settings.MAX_REQUEST_TIMEOUT:g} seconds")
    return seconds


def _response_headers(headers: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    out = []
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        k = key.lower()
        if k in FORWARD_RESPONSE_HEADERS or (k.startswith("x-edge-")):
            if "\n" in value or "\r" in value:
                continue
            if k == "location" and (":" in value.split("/", 1)[0] or value.startswith(("//", "\\"))):
                continue  # relative references only: a plugin cannot redirect callers off the bridge
            out.append((k.encode("latin-1", "replace"), value.encode("latin-1", "replace")))
    return out


def _ago(when) -> str:
    from django.utils import timezone

    seconds = int((timezone.now() - when).total_seconds())
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def request_id_from(headers: dict[str, str]) -> str:
    rid = headers.get("x-request-id", "")
    return rid if rid and _REQUEST_ID.match(rid) else new_request_id()


def notify_observers(info: CallInfo) -> None:
    for observer in call_observers:
        try:
            observer(info)
        except Exception:
            log.exception("call observer failed")


# --- the lean ASGI handler ----------------------------------------------------------------


class ProxyApp:
    """ASGI app: serves token-authenticated proxy calls, hands everything else to Django."""

    def __init__(self, django_app) -> None:
        self.django = django_app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.django(scope, receive, send)
        target = parse_target(scope["path"])
        if target is None:
            return await self.django(scope, receive, send)
        return await self.serve(scope, receive, send, target)

    async def serve(self, scope, receive, send, target: ProxyTarget) -> None:
        """An HTTP call to ``target`` (the scope's path, parsed)."""
        headers = request_headers(scope)
        token = bearer_from_header(headers.get("authorization"))
        info = CallInfo(request_id_from(headers), None, target, scope["method"])
        extra = cors_headers(headers.get("origin"), expose=PROXY_EXPOSED_HEADERS) if token is not None else []
        try:
            refusal = _refusal_before_django(headers, token, scope["method"])
            if refusal is not None:
                raise refusal
            if token is None:
                # Browser sessions (cookie + CSRF) are Django's business; api.proxy_views
                # gives them the same answers (body limit, JSON errors) as token callers.
                return await self.django(scope, receive, send)
            address = throttling.client_address(scope)
            guessing = throttling.auth_failures.refusal(address)
            if guessing is not None:
                raise guessing
            principal = await directory.principal(token)
            if principal is None:
                throttling.auth_failures.failed(address)
                raise ProxyError(401, "unauthorized", "invalid, expired or revoked API token",
                                 {"www-authenticate": 'Bearer realm="radical-edge"'})
            info.principal = principal
            body, stream, length = await _read_body(receive, headers)
            reply = await proxy_call(
                principal=principal, target=target, method=scope["method"],
                query=scope.get("query_string", b"").decode("latin-1"), headers=headers,
                body=body, body_stream=stream, body_length=length, info=info,
                watch_disconnect=(lambda: _wait_disconnect(receive)) if stream is None else None,
            )
        except DatabaseError as exc:
            # A cache miss while the database is restarting: retryable, not a crash.
            log.warning("database unavailable on the proxy path: %s", exc,
                        extra={"request_id": info.request_id})
            refused = ProxyError(503, "bridge_unavailable", "the bridge cannot reach its database; retry shortly")
        except ProxyError as exc:
            refused = exc
        except asyncio.CancelledError:
            # The server stopped waiting (its graceful-shutdown limit) before the edge
            # answered: a JSON answer and an audit record, not the server's bare 500.
            refused = ProxyError(503, "bridge_shutdown", "this bridge process stopped before the edge answered; "
                                 "the call may have run on the edge")
            info.status, info.error = refused.status, refused.error
            with contextlib.suppress(Exception):
                await send_error(send, refused, [*base_headers(info.request_id), *extra])
            notify_observers(info)
            return
        else:
            info.status = reply.status
            # None only on this path, which returns; mypy cannot narrow a variable across
            # try/except/else, so it keeps the first binding's type (ProxyError).
            refused = await gate_answer(info) if answer_gates else None  # type: ignore[assignment]
            if refused is None:
                try:
                    await _send_reply(send, reply, info, extra)
                finally:
                    notify_observers(info)
                return
            if reply.stream is not None:
                await reply.stream.aclose()  # cancels the call on the edge
        # Its traceback holds this frame, which holds it (as ``refused``, ``refusal`` or
        # ``guessing``): a reference cycle per refused call, freed only by a full collection.
        refused.__traceback__ = None
        info.status, info.error = refused.status, refused.error
        if answer_gates and refused.error != "audit_unavailable":
            refused = await gate_answer(info) or refused
        await send_error(send, refused, [*base_headers(info.request_id), *extra])
        notify_observers(info)


def _refusal_before_django(headers: dict[str, str], token: str | None, method: str) -> ProxyError | None:
    """What every proxied call is refused for before anyone reads its body, token or not:
    a host not in ALLOWED_HOSTS (Django checks only the paths it serves), a declared body
    over the limit, and, without a token, no session cookie either (a JSON 401, where
    Django would have answered a POST with its HTML CSRF page). CORS preflights go on."""
    if not host_allowed(headers):
        return ProxyError(400, "bad_host", "this host name is not served here (ALLOWED_HOSTS)")
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > edge_settings.MAX_BODY_BYTES:
        return ProxyError(413, "payload_too_large",
                          f"request body of {declared} bytes exceeds the limit of {edge_settings.MAX_BODY_BYTES}")
    if token is None and method != "OPTIONS" and session_key_from_cookie(headers.get("cookie")) is None:
        return ProxyError(401, "unauthorized", "log in, or send 'Authorization: Bearer <API token>'",
                          {"www-authenticate": 'Bearer realm="radical-edge"'})
    return None


async def _wait_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _read_body(receive, headers: dict[str, str]) -> tuple[bytes, AsyncIterator[bytes] | None, int | None]:
    """Read a small body whole; hand a large one over as a stream (bounded memory)."""
    limit = edge_settings.MAX_BODY_BYTES
    declared = headers.get("content-length")
    length: int | None = None
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ProxyError(400, "bad_request", "invalid Content-Length") from None
        if length > limit:
            raise ProxyError(413, "payload_too_large", f"request body of {length} bytes exceeds the limit of {limit}")
    elif "transfer-encoding" not in headers:
        # No body (RFC 9112 6.3): nothing to wait for. The server's empty "http.request"
        # message stays queued; a disconnect watch reads past it.
        return b"", None, None
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ProxyError(499, "client_closed", "the caller disconnected")
    first = message.get("body", b"")
    if not message.get("more_body"):
        return first, None, None
    if length is not None and length <= protocol.INLINE_BODY_LIMIT:
        parts = [first]
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ProxyError(499, "client_closed", "the caller disconnected")
            parts.append(message.get("body", b""))
        return b"".join(parts), None, None

    async def rest() -> AsyncIterator[bytes]:
        yield first
        msg = message
        while msg.get("more_body"):
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise ProxyError(499, "client_closed", "the caller disconnected")
            yield msg.get("body", b"")

    return b"", rest(), length


async def _send_reply(send, reply: ProxyReply, info: CallInfo, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    headers = [*base_headers(reply.request_id), *extra]
    headers += [h for h in reply.headers if h[0] != b"cache-control"]
    if reply.stream is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        return
    if reply.length is not None:
        headers.append((b"content-length", str(reply.length).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    try:
        async for piece in reply.stream:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    except CallFailed as exc:
        # Headers are out already: all we can do is cut the body short.
        log.warning("streamed answer failed: %s", exc.detail, extra={"request_id": info.request_id})
        info.status, info.error = exc.status, exc.error
        raise
    await send({"type": "http.response.body", "body": b""})
