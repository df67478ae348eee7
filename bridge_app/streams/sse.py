"""``GET /events``: live events as Server-Sent Events, for scripts and the portal.

Event types (the ``data:`` of each is one line of JSON):

* ``topology``: ``{"id", "edge", "online", "plugins" (when online), "ts"}``, an edge the
  caller may see connected or disconnected;
* ``notification``: ``{"id", "edge", "plugin", "topic", "data", "ts"}``, an event a plugin
  emitted, shown to the user it concerns (its ``owner``) and to the edge's owner and site
  admins, never to other users or viewers of the edge.

Every event has an ``id:``; a client that reconnects with ``Last-Event-ID`` (header, or
``?last_event_id=``) gets every event it may see with a larger id from the database
(``EventRecord``), then the live ones, with none missing and none twice. Optional filters
``?edge=``, ``?plugin=``, ``?topic=`` (a filter on plugin or topic leaves topology out).

Ids go out in increasing order, and an id goes out only once every event the caller may
see with a smaller id has: so the client's Last-Event-ID never claims more than it got.
Live events of different processes can arrive out of id order (each process publishes
its own batches); ids are committed in id order (``events.py``), so a live event with id
e means every smaller id is committed, and a stream that receives e while ids between
the last one it sent and e are unaccounted for waits up to EVENTS_HOLE_WAIT for them to
arrive live, then reads the missing ones from the database (one query,
:meth:`EventStream._render`) and sends them and e in id order; a live message that arrives
after its event was sent that way is dropped.

A stream is an async generator on the event loop, served by :class:`EventsApp` in front of
Django (whose request cycle would hold a thread per subscriber). It has a channel of its
own in the channel layer and joins ``portal.topology`` and ``portal.edge.<name>`` of each
edge its caller may see, so events published by any bridge process reach it. Joining
happens *before* the stream reads the database's highest id (its "high-water mark"):
events up to that id come from the database, later ones live.

Keeping up: a reader task drains the channel into a bounded backlog; a subscriber that
falls EVENTS_STREAM_BACKLOG events behind is cut off (it reconnects and catches up from
the database) instead of growing the bridge's memory.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import DatabaseError
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from edge_agent import protocol

from .. import messages
from ..access import policy
from ..access.tokens import bearer_from_header, session_key_from_cookie
from ..calls import throttling
from ..calls.compat import V0Stream, bridge_url_from, wants_v0
from ..calls.errors import AppError
from ..calls.hosts import host_allowed
from ..calls.responses import cors_headers, django_error, request_headers, send_error
from ..conf import edge_settings
from ..core.directory import Principal, directory
from ..core.rpc import get_inbox
from ..messages import TOPOLOGY_GROUP, edge_events_group
from ..models import EDGE_NAME_RE
from ..observability import metrics
from .events import NOTIFICATION, TOPOLOGY, notification_json, topology_json

log = logging.getLogger(__name__)

# Roles that see every notification of an edge, whoever it concerns.
MANAGERS = policy.MANAGERS
# Rows per replay query.
REPLAY_PAGE = 500
# Re-join every group this often (the Redis core layer expires memberships after a day).
REJOIN_INTERVAL = 3600.0
_EDGE_NAME = re.compile(EDGE_NAME_RE)
_EVENT_ID = re.compile(r"^[0-9]{1,18}$")
_OVERFLOW = object()
# Streams of this process, only so that a graceful shutdown can end them at once.
_live: weakref.WeakSet[EventStream] = weakref.WeakSet()


# Most id ranges in one hole read (more are merged: reading a few ids twice is harmless).
HOLE_RANGES = 32


def missing_ranges(floor: int, upto: int, received: set[int]) -> list[tuple[int, int]]:
    """The ids in (floor, upto] not in ``received``, as at most HOLE_RANGES inclusive
    ``(lo, hi)`` ranges covering them (and, where merged, some received ids)."""
    ranges: list[tuple[int, int]] = []
    expected = floor + 1
    for event_id in sorted(received):
        if event_id > expected:
            ranges.append((expected, event_id - 1))
        expected = event_id + 1
    if expected <= upto:
        ranges.append((expected, upto))
    if len(ranges) > HOLE_RANGES:
        size = -(-len(ranges) // HOLE_RANGES)
        ranges = [(group[0][0], group[-1][1]) for group in (ranges[i:i + size] for i in range(0, len(ranges), size))]
    return ranges


class StreamRefused(AppError):
    """``GET /events`` answered with an error instead of a stream."""


@dataclass(frozen=True)
class Filters:
    edge: str | None = None
    plugin: str | None = None
    topic: str | None = None

    def wants_edge(self, edge: str) -> bool:
        return self.edge is None or self.edge == edge

    def wants(self, kind: str, edge: str, plugin: str, topic: str) -> bool:
        if not self.wants_edge(edge):
            return False
        if kind == TOPOLOGY:
            return self.plugin is None and self.topic is None
        return (self.plugin is None or self.plugin == plugin) and (self.topic is None or self.topic == topic)


def may_see(principal: Principal, role: str | None, kind: str, owner: int | None) -> bool:
    """Whether a caller with ``role`` on an edge may see one of its events: topology with
    any role; a notification only if it concerns the caller or the caller manages the edge."""
    return policy.may_see_event(role, kind, owner, principal.user_id)


def format_event(event_id: int, kind: str, data_json: str) -> str:
    """One SSE event. ``data_json`` is single-line JSON (JSON escapes every line break)."""
    return f"id: {event_id}\nevent: {kind}\ndata: {data_json}\n\n"


# -- reads ------------------------------------------------------------------------------------


def _edge_names_for(principal: Principal) -> list[str]:
    """Edges the principal might see: all for admins, else owned or granted (the role
    itself comes from the directory, by ``policy.role_for``)."""
    from ..models import Edge

    if principal.is_superuser:
        return list(Edge.objects.values_list("name", flat=True))
    visible = policy.edge_visibility_q(user_id=principal.user_id, group_ids=list(principal.group_ids))
    return sorted(set(Edge.objects.filter(visible).values_list("name", flat=True)))


# Queries run in worker threads, never queued behind the consumers' thread-sensitive ORM
# calls; database_sync_to_async also tidies each thread's connection as a request would.
_edge_names_async = database_sync_to_async(_edge_names_for, thread_sensitive=False)


async def edge_roles_for(principal: Principal) -> dict[str, str]:
    """``{edge name: role}`` of every edge ``principal`` may see."""
    names = await _edge_names_async(principal)
    if principal.is_superuser:
        return dict.fromkeys(names, policy.ADMIN)
    roles = {}
    for name in names:
        entry = await directory.edge(name)
        role = entry.role_for(principal) if entry is not None else None
        if role is not None:
            roles[name] = role
    return roles


def _max_event_id() -> int:
    from ..models import EventRecord

    return EventRecord.objects.aggregate(high=Max("id"))["high"] or 0


max_event_id = database_sync_to_async(_max_event_id, thread_sensitive=False)


def replay_page(*, principal: Principal, roles: dict[str, str], filters: Filters, after: int, upto: int,
                kinds: tuple[str, ...] = (TOPOLOGY, NOTIFICATION), limit: int = REPLAY_PAGE,
                ranges: list[tuple[int, int]] | None = None) -> list[tuple[int, str, str]]:
    """Events with ``after < id <= upto`` (and, with ``ranges``, ``lo <= id <= hi`` for one
    of them) that the principal may see and the filters want, oldest first, as ``(id, kind,
    data json)``; at most ``limit``."""
    from ..models import EventRecord

    if filters.plugin is not None or filters.topic is not None:
        kinds = tuple(k for k in kinds if k == NOTIFICATION)
    if not kinds or upto <= after:
        return []
    qs = EventRecord.objects.filter(id__gt=after, id__lte=upto, kind__in=kinds)
    if ranges:
        within = Q()
        for lo, hi in ranges:
            within |= Q(id__gte=lo, id__lte=hi)
        qs = qs.filter(within)
    if filters.edge is not None:
        qs = qs.filter(edge=filters.edge)
    if filters.plugin is not None:
        qs = qs.filter(plugin=filters.plugin)
    if filters.topic is not None:
        qs = qs.filter(topic=filters.topic)
    if not principal.is_superuser:
        visible = [name for name in roles if filters.wants_edge(name)]
        managed = [name for name in visible if roles[name] in MANAGERS]
        if not visible:
            return []
        qs = qs.filter(Q(kind=TOPOLOGY, edge__in=visible) | Q(kind=NOTIFICATION, edge__in=managed)
                       | Q(kind=NOTIFICATION, edge__in=visible, owner_uid=principal.user_id))
    rows = qs.order_by("id").values_list("id", "kind", "edge", "plugin", "topic", "data", "at")[:limit]
    out = []
    for event_id, kind, edge, plugin, topic, data, at in rows:
        if kind == TOPOLOGY:
            text = topology_json(event_id, edge, data if isinstance(data, dict) else {}, at.timestamp())
        else:
            text = notification_json(event_id, edge, plugin, topic, protocol.encode(data), at.timestamp())
        out.append((event_id, kind, text))
    return out


_replay_page = database_sync_to_async(replay_page, thread_sensitive=False)


# -- one subscriber -------------------------------------------------------------------------------


class EventStream:
    """One ``GET /events`` subscriber. :meth:`body` is the response body; it subscribes
    when iteration starts and unsubscribes when it ends, however it ends.

    ``revalidate()`` returns the caller's current principal (group memberships change) or
    None once its token is revoked or its session ended; the stream then ends.
    """

    def __init__(self, principal: Principal, filters: Filters, *, last_event_id: int | None,
                 revalidate: Callable[[], Awaitable[Principal | None]], revalidate_often: bool = False) -> None:
        self.principal = principal
        self.filters = filters
        self.cursor = last_event_id
        self.revalidate = revalidate
        # Cheap revalidation (a cached token lookup) runs at every keep-alive, not only at
        # every refresh.
        self.revalidate_often = revalidate_often
        self.layer: Any = None
        self.channel = ""
        self.roles: dict[str, str] = {}
        self.joined: set[str] = set()  # edges whose group this stream is in
        self.topology_joined = False
        self.high = 0  # events up to this id come from the database, later ones live
        # Every event this stream may send with an id up to here has been sent (its client's
        # Last-Event-ID is at most this, with nothing for it in between): nothing at or below
        # it goes out again.
        self.sent = 0
        self.hole_reads = 0  # database reads for ids that live delivery had not accounted for
        self.pending: collections.deque[list[dict[str, Any]]] = collections.deque()
        self.pending_count = 0
        self.overflow = False
        self.broken = False
        self.closing = ""  # why the stream is ending, once it is
        self._wake = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self._next_refresh = 0.0
        self._next_rejoin = 0.0

    # -- the response body -----------------------------------------------------------------

    async def body(self) -> AsyncGenerator[bytes, None]:
        retry = f"retry: {int(edge_settings.EVENTS_RETRY_MS)}\n"
        try:
            try:
                await self._subscribe()
            except Exception as exc:
                log.warning("event stream could not subscribe: %s", exc)
                yield f"{retry}: the bridge cannot reach its channel layer or database; retry shortly\n\n".encode()
                return
            # The client learns at once that it is connected, and how long to wait before
            # reconnecting.
            yield f"{retry}\n".encode()
            try:
                async for chunk in self._events():
                    yield chunk
            except Exception:
                # The client reconnects with Last-Event-ID and misses nothing.
                log.warning("event stream failed", exc_info=True)
                yield b": the bridge hit an error; reconnect with Last-Event-ID\n\n"
        finally:
            await self._unsubscribe()

    async def _events(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        sent = self.cursor
        if self.cursor is not None:
            async for chunk, last_id in self._replay(self.cursor, self.high):
                sent = last_id
                yield chunk
        if sent != self.high:
            # An id-only event: the client's Last-Event-ID advances to the high-water mark
            # (it has everything up to there), and no event is dispatched.
            yield f"id: {self.high}\n\n".encode()
        self.sent = self.high
        last_out = loop.time()
        while True:
            events = await self._next(edge_settings.EVENTS_KEEPALIVE - (loop.time() - last_out))
            if events is _OVERFLOW:
                yield b": too far behind; reconnect with Last-Event-ID to catch up\n\n"
                return
            if self.broken:
                yield b": the bridge lost its channel layer; reconnect with Last-Event-ID\n\n"
                return
            if self.closing:
                yield f": {self.closing}; reconnect with Last-Event-ID\n\n".encode()
                return
            if loop.time() >= self._next_refresh and not await self._refresh():
                yield b": your access ended\n\n"
                return
            if events is None:
                if self.revalidate_often and await self.revalidate() is None:
                    yield b": your access ended\n\n"
                    return
                yield b": keep-alive\n\n"
                last_out = loop.time()
                continue
            text = await self._render(events)
            if text:
                yield text.encode()
                last_out = loop.time()

    # -- subscription ----------------------------------------------------------------------

    def close(self, reason: str = "this bridge process is shutting down") -> None:
        """End the stream soon (graceful shutdown, channel layer outage): the client
        reconnects, here or elsewhere, and resumes with Last-Event-ID."""
        self.closing = reason
        self._wake.set()

    async def _subscribe(self) -> None:
        _live.add(self)
        await get_inbox()  # directory invalidations (grants, tokens) reach this process
        self.layer = get_channel_layer()
        self.channel = await self.layer.new_channel(messages.EVENTS_PREFIX)
        self.roles = await edge_roles_for(self.principal)
        await self.layer.group_add(TOPOLOGY_GROUP, self.channel)
        self.topology_joined = True
        for name in self.roles:
            if self.filters.wants_edge(name):
                await self._join(name)
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="events-stream-reader")
        # After joining: whatever is committed later than this reaches us live.
        self.high = await max_event_id()
        now = asyncio.get_running_loop().time()
        self._next_refresh = now + edge_settings.EVENTS_REFRESH_INTERVAL
        self._next_rejoin = now + REJOIN_INTERVAL

    async def _join(self, edge: str) -> None:
        await self.layer.group_add(edge_events_group(edge), self.channel)
        self.joined.add(edge)

    async def _leave_all(self) -> None:
        groups = [edge_events_group(name) for name in self.joined]
        if self.topology_joined:
            groups.append(TOPOLOGY_GROUP)
        self.joined = set()
        self.topology_joined = False
        for group in groups:
            try:
                await self.layer.group_discard(group, self.channel)
            except Exception:
                pass  # the layer is away; memberships of a dead channel expire by themselves

    async def _unsubscribe(self) -> None:
        _live.discard(self)
        if self.layer is None:
            return
        await self._leave_all()
        if self._reader is not None:
            # Cancelling the receive also drops the channel's subscription on Redis pub/sub.
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    async def _read(self) -> None:
        """Drain the channel into the backlog, so the layer never holds our messages."""
        limit = edge_settings.EVENTS_STREAM_BACKLOG
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Live events may have been lost: end the stream, the client catches up.
                log.warning("event stream lost its channel: %s", exc)
                self.broken = True
                self._wake.set()
                return
            events = message.get("events")
            if message.get("type") != messages.EVENTS or not events:
                continue
            self.pending.append(events)
            self.pending_count += len(events)
            if self.pending_count > limit:
                self.overflow = True
                self._wake.set()
                await self._leave_all()  # stop the inflow at once
                return
            self._wake.set()

    async def _next(self, timeout: float) -> Any:
        """The events received since the last call; None after ``timeout`` idle seconds."""
        if not self.pending and not self.overflow and not self.broken and not self.closing:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(timeout, 0.0))
            except asyncio.TimeoutError:
                return None
        if self.overflow:
            return _OVERFLOW
        events: list[dict[str, Any]] = []
        while self.pending:
            events.extend(self.pending.popleft())
        self.pending_count = 0
        return events

    async def _refresh(self) -> bool:
        """Re-check the caller and the edges it may see; False if its access ended."""
        loop = asyncio.get_running_loop()
        self._next_refresh = loop.time() + edge_settings.EVENTS_REFRESH_INTERVAL
        try:
            principal = await self.revalidate()
        except Exception as exc:
            log.warning("event stream could not re-check its caller: %s; trying again later", exc)
            return True
        if principal is None:
            return False
        self.principal = principal
        roles = await edge_roles_for(principal)
        wanted = {name for name in roles if self.filters.wants_edge(name)}
        rejoin = loop.time() >= self._next_rejoin
        if rejoin:
            self._next_rejoin = loop.time() + REJOIN_INTERVAL
            await self.layer.group_add(TOPOLOGY_GROUP, self.channel)
        for name in sorted(wanted if rejoin else wanted - self.joined):
            await self._join(name)
        for name in self.joined - wanted:
            await self.layer.group_discard(edge_events_group(name), self.channel)
            self.joined.discard(name)
        self.roles = roles
        return True

    # -- output ----------------------------------------------------------------------------

    async def _replay(self, after: int, upto: int) -> AsyncIterator[tuple[bytes, int]]:
        """Yield ``(SSE text, last id in it)`` for the stored events in (after, upto]."""
        async for page in self._rows(after, upto, roles=self.roles):
            yield "".join(format_event(*row) for row in page).encode(), page[-1][0]

    async def _render(self, events: list[dict[str, Any]]) -> str:
        """The SSE text for a drained batch of live events: those the caller may see and the
        filters want, with every event of ids not yet accounted for read from the database,
        all in id order and none at or below ``self.sent``; advances ``self.sent``."""
        out: dict[int, str] = {}
        received: set[int] = set()
        floor = self.sent
        joined_late, upto = await self._take(events, floor, received, out)
        if not received:
            return ""
        if joined_late:
            # The new edge's events published before the join reached no group of ours.
            upto = max(upto, await max_event_id())
        elif len(received) < upto - floor:
            # A hole: most often the rest of the same batch, published to another group a
            # moment later. Wait that moment before asking the database.
            upto = await self._await_hole(floor, upto, received, out)
        if len(received) < upto - floor:
            # Ids in (floor, upto] that did not arrive: other edges' events, or events of
            # ours whose live message is late (another process published it later) or lost.
            # All are committed (ids are committed in id order), so the database has them.
            self.hole_reads += 1
            metrics.EVENTS_HOLE_READS.inc()
            visible = await self._current_roles()
            async for rows in self._rows(floor, upto, roles=visible, ranges=missing_ranges(floor, upto, received)):
                for event_id, kind, text in rows:
                    out.setdefault(event_id, format_event(event_id, kind, text))
        self.sent = upto
        return "".join(out[event_id] for event_id in sorted(out))

    async def _take(self, events: list[dict[str, Any]], floor: int, received: set[int],
                    out: dict[int, str]) -> tuple[bool, int]:
        """Add live ``events`` above ``floor`` to ``received`` and, if the caller may see them
        and the filters want them, their SSE text to ``out``; returns whether it joined an
        edge, and the highest id received so far (0 if none)."""
        roles: dict[str, str | None] = {}
        principal = self.principal
        filters = self.filters
        joined_late = False
        highest = 0
        for event in events:
            event_id, kind, edge = event["id"], event["kind"], event["edge"]
            if event_id <= floor or event_id in received:
                continue  # sent already (replayed, or read from the database when a later id came first)
            received.add(event_id)
            if event_id > highest:
                highest = event_id
            if edge in roles:
                role = roles[edge]
            else:
                entry = await directory.edge(edge)
                role = roles[edge] = entry.role_for(principal) if entry is not None else None
            if not may_see(principal, role, kind, event["owner"]):
                continue
            if kind == TOPOLOGY and edge not in self.joined and filters.wants_edge(edge):
                # An edge this stream does not follow yet (new, or newly granted): join its
                # group; what it published before the join took effect comes from the database.
                await self._join(edge)
                self.roles[edge] = role or policy.VIEWER
                joined_late = True
            if filters.wants(kind, edge, event["plugin"], event["topic"]):
                out[event_id] = format_event(event_id, kind, event["json"])
        return joined_late, highest

    async def _await_hole(self, floor: int, upto: int, received: set[int], out: dict[int, str]) -> int:
        """Take live events for up to EVENTS_HOLE_WAIT seconds while ids in (floor, highest
        received] are missing; returns the highest id received."""
        loop = asyncio.get_running_loop()
        # The rest of the batch (published to another group), or another process's batch a
        # moment behind, usually comes within milliseconds.
        deadline = loop.time() + edge_settings.EVENTS_HOLE_WAIT
        while len(received) < upto - floor:
            if self.overflow or self.broken or self.closing:
                break
            if not self.pending:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            events: list[dict[str, Any]] = []
            while self.pending:
                events.extend(self.pending.popleft())
            self.pending_count = 0
            joined_late, highest = await self._take(events, floor, received, out)
            upto = max(upto, highest)
            if joined_late:
                # Joined an edge meanwhile: its earlier events are in the database only.
                return max(upto, await max_event_id())
        return upto

    async def _current_roles(self) -> dict[str, str]:
        """The caller's roles on the edges it follows, from the directory (which hears of
        revoked grants at once; ``self.roles`` is refreshed every EVENTS_REFRESH_INTERVAL)."""
        if self.principal.is_superuser:
            return self.roles
        roles = {}
        for name in self.roles:
            entry = await directory.edge(name)
            role = entry.role_for(self.principal) if entry is not None else None
            if role is not None:
                roles[name] = role
        return roles

    async def _rows(self, after: int, upto: int, *, roles: dict[str, str],
                    ranges: list[tuple[int, int]] | None = None) -> AsyncIterator[list[tuple[int, str, str]]]:
        """Pages of ``(id, kind, data json)`` of the stored events in (after, upto] (and in
        one of ``ranges``, if given)."""
        while True:
            page = await _replay_page(principal=self.principal, roles=roles, filters=self.filters, after=after,
                                      upto=upto, ranges=ranges)
            if page:
                yield page
            if len(page) < REPLAY_PAGE:
                return
            after = page[-1][0]


def streams_shutdown(reason: str = "this bridge process is shutting down") -> int:
    """End every event stream of this process (its client reconnects and resumes with
    Last-Event-ID); returns how many. On graceful shutdown, call it before the ASGI server
    waits for open requests, or each stream holds the shutdown up; after a channel layer
    outage, so that clients fetch the events that live delivery lost."""
    streams = list(_live)
    for stream in streams:
        stream.close(reason)
    return len(streams)


# -- opening a stream: who calls, and what they ask for --------------------------------------------


def principal_for_user(user: Any) -> Principal:
    """A portal (session) user as a Principal, with its groups. Runs queries: call in a thread."""
    return Principal(user_id=user.pk, username=user.get_username(), is_superuser=user.is_superuser, scope="full",
                     group_ids=frozenset(user.groups.values_list("pk", flat=True)))


def _session_principal(session_key: str | None) -> Principal | None:
    """The user of a portal session now: None once logged out, deactivated, or its password
    changed (``auth.get_user`` checks the session's hash). Runs queries: call in a thread."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib import auth

    if not session_key or len(session_key) > 100:
        return None
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = auth.get_user(request)
    if not user.is_authenticated or not user.is_active:
        return None
    return principal_for_user(user)


session_principal = database_sync_to_async(_session_principal, thread_sensitive=False)


def _param(params: dict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value in ("", "*"):
        return None
    if len(value) > 100:
        raise StreamRefused(400, "bad_filter", f"'{name}' is longer than 100 characters")
    return value


async def open_stream(*, authorization: str | None, session_key: str | None, params: dict[str, str],
                      last_event_id: str | None, client: str = "") -> EventStream:
    """Authenticate a ``GET /events`` caller and check what it asks for; the stream itself
    starts when its body is iterated. ``authorization`` is the header (an API token wins over a
    session cookie, as on the proxy); ``last_event_id`` the header, else ``params``'s
    ``last_event_id``. Raises :class:`StreamRefused`: 401 without valid credentials, 404 for
    an ``edge`` the caller may not see (as for one that does not exist), 400 for malformed
    parameters, 429 for a ``client`` address that sent too many invalid tokens."""
    await get_inbox()  # the directory's caches must hear invalidations before use
    token = bearer_from_header(authorization)
    unauthorized = {"WWW-Authenticate": 'Bearer realm="radical-edge"'}
    if token is not None:
        guessing = throttling.auth_failures.refusal(client)
        if guessing is not None:
            raise StreamRefused(guessing.status, guessing.error, guessing.detail, guessing.headers)
        principal = await directory.principal(token)
        if principal is None:
            throttling.auth_failures.failed(client)
            raise StreamRefused(401, "unauthorized", "invalid, expired or revoked API token", unauthorized)

        def revalidate() -> Awaitable[Principal | None]:
            return directory.principal(token)

        often = True  # a cached lookup: at every keep-alive, so a revoked token ends the stream soon
    else:
        principal = await session_principal(session_key) if session_key else None
        if principal is None:
            raise StreamRefused(401, "unauthorized", "log in, or send 'Authorization: Bearer <API token>'",
                                unauthorized)

        def revalidate() -> Awaitable[Principal | None]:
            return session_principal(session_key)

        often = False
    filters = Filters(_param(params, "edge"), _param(params, "plugin"), _param(params, "topic"))
    if filters.edge is not None:
        entry = await directory.edge(filters.edge) if _EDGE_NAME.match(filters.edge) else None
        if entry is None or entry.role_for(principal) is None:
            raise StreamRefused(404, "unknown_edge", f"no edge named '{filters.edge}'")
    cursor = last_event_id if last_event_id not in (None, "") else params.get("last_event_id")
    if cursor in (None, ""):
        start = None
    elif _EVENT_ID.match(cast(str, cursor).strip()):
        start = int(cast(str, cursor).strip())
    else:
        raise StreamRefused(400, "bad_last_event_id", "Last-Event-ID must be an event id this bridge sent")
    return EventStream(principal, filters, last_event_id=start, revalidate=revalidate, revalidate_often=often)


STREAM_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass events on at once
    (b"x-content-type-options", b"nosniff"),
)


# -- serving it: the ASGI handler, and the Django view ------------------------------------------------


class EventsApp:
    """ASGI app in front of the rest (``asgi.py``): serves ``GET /events`` itself.

    Not a Django view, because Django runs each request in a ``ThreadSensitiveContext`` whose
    thread (started by the first sync middleware) lives as long as the request: a streamed
    response held one idle thread per subscriber (measured: 50 subscribers, 61 threads; here
    the count stays flat). Other methods (CORS preflights, 405) go on to ``app``.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/events" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        headers = request_headers(scope)
        params = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        extra = cors_headers(headers.get("origin")) if "authorization" in headers else []
        try:
            if not host_allowed(headers):
                raise StreamRefused(400, "bad_host", "this host name is not served here (ALLOWED_HOSTS)")
            stream: EventStream | V0Stream = await open_stream(authorization=headers.get("authorization"),
                                       session_key=session_key_from_cookie(headers.get("cookie")), params=params,
                                       last_event_id=headers.get("last-event-id"),
                                       client=throttling.client_address(scope))
        except StreamRefused as exc:
            await send_error(send, exc, extra)
            return
        except DatabaseError as exc:
            log.warning("database unavailable for an event stream: %s", exc)
            await send_error(send, StreamRefused(503, "bridge_unavailable",
                                                 "the bridge cannot reach its database; retry shortly",
                                                 {"retry-after": "5"}), extra)
            return
        if wants_v0(headers, params):  # the original RADICAL Edge SDK's dialect (bridge_app/calls/compat.py)
            stream = V0Stream(stream, bridge_url_from(headers, scope))
        await send({"type": "http.response.start", "status": 200, "headers": [*STREAM_HEADERS, *extra]})
        await serve_stream(stream, receive, send)


async def serve_stream(stream: EventStream | V0Stream, receive, send) -> None:
    """Send the stream's body until it ends or the client goes away; either way the stream
    unsubscribes before this returns."""
    body = stream.body()

    async def pump() -> None:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(pump()), loop.create_task(watch())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await body.aclose()


async def events_view(request: HttpRequest) -> HttpResponse:
    """``GET /events`` through Django: what a deployment without :class:`EventsApp` in front
    gets (it works, at the cost of a thread per subscriber), and the 405 for other methods."""
    if request.method != "GET":
        return django_error(StreamRefused(405, "method_not_allowed", "use GET", {"Allow": "GET"}))
    from django.conf import settings

    try:
        stream: EventStream | V0Stream = await open_stream(authorization=request.headers.get("Authorization"),
                                   session_key=request.COOKIES.get(settings.SESSION_COOKIE_NAME),
                                   params=request.GET.dict(), last_event_id=request.headers.get("Last-Event-ID"),
                                   client=request.META.get("REMOTE_ADDR", ""))
    except StreamRefused as exc:
        return django_error(exc)
    if wants_v0({k.lower(): v for k, v in request.headers.items()}, request.GET.dict()):
        stream = V0Stream(stream, request.build_absolute_uri("/").rstrip("/"))
    response = StreamingHttpResponse(stream.body())
    for key, value in STREAM_HEADERS:
        response[key.decode()] = value.decode()
    return response


# -- the OpenAPI schema ---------------------------------------------------------------------------


def openapi_add_events_path(result: dict[str, Any]) -> dict[str, Any]:
    """Document ``GET /events`` (served outside DRF) in the schema drf-spectacular built."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    text = {"name": "", "in": "query", "required": False, "schema": {"type": "string"}}
    result.setdefault("paths", {})["/events"] = {"get": {
        "tags": ["events"],
        "operationId": "events_stream",
        "summary": "Live events (Server-Sent Events)",
        "description": (
            "A `text/event-stream` of the events the caller may see. `event: topology`, data "
            "`{id, edge, online, plugins?, ts}`: an edge connected or disconnected. `event: notification`, "
            "data `{id, edge, plugin, topic, data, ts}`: a plugin event (job and task states, ...), shown to "
            "the user it concerns and to the edge's owner and site admins. Every event has an `id:`; "
            "reconnect with `Last-Event-ID` (or `?last_event_id=`) to get what was missed. A comment is sent "
            "after ~15 s without events; `retry:` suggests the reconnection delay."),
        "parameters": [
            {**text, "name": "edge", "description": "only this edge's events"},
            {**text, "name": "plugin", "description": "only notifications of this plugin"},
            {**text, "name": "topic", "description": "only notifications with this topic"},
            {"name": "last_event_id", "in": "query", "required": False, "schema": {"type": "integer"},
             "description": "replay events after this id (as the Last-Event-ID header)"},
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
             "description": "replay events after this id"},
            {"name": "format", "in": "query", "required": False, "schema": {"type": "string", "enum": ["v0"]},
             "description": "`v0`: the original RADICAL Edge's dialect (plain `data:` lines, `{topic, data}`, "
                            "a topology snapshot first; docs/MIGRATING.md)"},
        ],
        "responses": {
            "200": {"description": "the event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            "400": {"description": "malformed parameter", **error},
            "401": {"description": "missing or invalid credentials", **error},
            "404": {"description": "`edge` is unknown or not visible to the caller", **error},
        },
        "security": [{"bearerAuth": []}, {"cookieAuth": []}],
    }}
    return result
