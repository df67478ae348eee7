"""Events that leave the bridge towards people: edges coming and going, plugin notifications.

How an event travels::

    EdgeConsumer ── event_received() / topology_changed() ──► buffer (in process, no I/O)
        ── flusher task, at most every EVENTS_FLUSH_INTERVAL s ──► one transaction per batch
           (multi-row INSERTs into EventRecord; the database assigns the ids)
        ── then one channel-layer message per group and batch ──► portal.topology,
           portal.edge.<name> ──► every ``GET /events`` stream on every process (sse.py)

Writing first and publishing second means every live event carries the id that replay
after ``Last-Event-ID`` uses, and anything a subscriber could have missed is already in
the database when it asks. The consumer's path costs one tuple appended to a list.

Ids are handed out in commit order (SQLite has one writer; on PostgreSQL the batch
transaction takes an advisory lock), so a subscriber that has seen every event up to id N
needs exactly the events with ids above N.

Group messages are ``messages.events_message(events)``, ``{"type": "portal.events",
"events": [event, ...]}``, each event a dict with ``id``, ``kind`` (topology |
notification), ``edge``, ``plugin``, ``topic``, ``owner`` (user id or None) and ``json``:
the event's SSE data, encoded once here for every subscriber. Messages must not be mutated
by receivers (the in-memory layer shares them).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connections, transaction

from edge_agent import protocol
from edge_agent.backoff import backoff_delay

from .. import messages
from ..access import policy
from ..conf import edge_settings
from ..domain.services import chunks, padded, storable_text
from ..messages import TOPOLOGY_GROUP, edge_events_group
from ..observability import metrics

log = logging.getLogger(__name__)

TOPOLOGY = policy.TOPOLOGY  # the kind of event the access policy treats apart
NOTIFICATION = "notification"
MESSAGE_TYPE = messages.EVENTS
# Most rows per INSERT statement on SQLite (7 parameters each: well under its limit of
# 32,766), a power of two (services.chunks: few distinct statements to cache).
INSERT_CHUNK = 256
# Channel-layer messages must stay well under 1 MB: a batch is split at this many bytes of
# event data (an event larger than this travels alone; EVENT_MAX_BYTES bounds it).
MESSAGE_BYTES = 256 * 1024
# Agents' timestamps beyond this (or NaN, or negative) are replaced by the bridge's clock.
_YEAR_3000 = 32503680000.0
# Key of the PostgreSQL advisory lock that orders batch commits across processes.
_PG_LOCK_KEY = 0x52454556  # "REEV"

# (kind, edge, plugin, topic, owner uid, data, ts)
Row = tuple[str, str, str, str, "int | None", Any, float]


class EventBuffer:
    """Events waiting to be written. Appends and swaps are atomic under the GIL; a single
    flusher task per event loop writes them (started by ``wake_flusher``)."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.dropped = 0
        self._wake: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = weakref.WeakKeyDictionary()
        self._flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = (
            weakref.WeakKeyDictionary())
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        # (loop, wake event, flusher task) of the last add(): a burst skips the lookups.
        self._last: tuple[asyncio.AbstractEventLoop, asyncio.Event, asyncio.Task] | None = None

    def add(self, row: Row) -> None:
        rows = self.rows
        rows.append(row)
        # (The first test is the cheap one: settings are read through a Python __getattr__.)
        if len(rows) > 1000 and len(rows) > edge_settings.EVENTS_BUFFER_MAX:
            self._drop(len(rows) - edge_settings.EVENTS_BUFFER_MAX)
        self.wake_flusher()

    def wake_flusher(self) -> None:
        """Tell this event loop's flusher that events wait (starting it if needed)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on an event loop (tests, commands): events_flush() writes them
        last = self._last
        if last is not None and last[0] is loop and last[1].is_set() and not last[2].done():
            return  # the common case in a burst: the flusher already knows
        wake = self._wake.get(loop)
        if wake is None:
            wake = self._wake[loop] = asyncio.Event()
        wake.set()
        task = self._flushers.get(loop)
        if task is None or task.done():
            task = self._flushers[loop] = loop.create_task(self._flusher(wake), name="events-flusher")
        self._last = (loop, wake, task)

    def take(self) -> list[Row]:
        rows, self.rows = self.rows, []
        return rows

    def put_back(self, rows: list[Row]) -> None:
        """Return rows whose write failed (they go first: order is kept)."""
        self.rows = rows + self.rows
        excess = len(self.rows) - edge_settings.EVENTS_BUFFER_MAX
        if excess > 0:
            self._drop(excess)

    def _drop(self, n: int) -> None:
        del self.rows[:n]
        self.dropped += n
        metrics.child(metrics.EVENTS_DROPPED, "buffer").inc(n)
        log.warning("event buffer full: dropped the %d oldest events (database unreachable?)", n)

    async def stop_flusher(self) -> None:
        """Stop this event loop's flusher task (the buffer stays; events_flush() writes it)."""
        task = self._flushers.pop(asyncio.get_running_loop(), None)
        self._last = None
        if task is not None:
            async with self.lock():  # never in the middle of a batch
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def _flusher(self, wake: asyncio.Event) -> None:
        """Write whatever arrived, then rest for the flush interval: a lone event goes out at
        once, a burst becomes a few large batches per second."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            await wake.wait()
            wake.clear()
            started = loop.time()
            ok = await events_flush()
            if ok:
                failures = 0
                pause = edge_settings.EVENTS_FLUSH_INTERVAL - (loop.time() - started)
            else:
                failures += 1
                pause = backoff_delay(failures, base=0.5, cap=5.0)
            if self.rows:
                wake.set()
            if pause > 0:
                await asyncio.sleep(pause)


buffer = EventBuffer()


async def topology_changed(edge_name: str, *, online: bool) -> None:
    """An edge connected or disconnected (its plugins may have changed too). Never blocks
    on I/O: the event is written and published by the flusher."""
    if not online:
        lost = limiter.forget(edge_name)
        if lost:
            buffer.rows.extend(_dropped_rows({edge_name: lost}))
    buffer.add((TOPOLOGY, edge_name, "", "", None, {"online": bool(online)}, time.time()))


class EdgeEventLimiter:
    """A token bucket of events per edge (EVENTS_RATE_PER_EDGE per second, bursts of
    EVENTS_BURST_PER_EDGE; a rate of 0 turns it off). An agent that emits faster loses the
    excess, which is counted and reported to the edge's subscribers as one coalesced
    ``bridge/events_dropped`` event per flush (``{"dropped": n}``), so that they know to
    re-read state instead of trusting a stream with holes. One process holds an edge's
    socket, so a per-process bucket is the edge's bucket."""

    def __init__(self) -> None:
        # edge -> [tokens, last refill (monotonic), dropped since the last report]
        self._buckets: dict[str, list[float]] = {}

    def allow(self, edge: str) -> bool:
        rate = edge_settings.EVENTS_RATE_PER_EDGE
        if rate <= 0:
            return True
        now = time.monotonic()
        burst = float(edge_settings.EVENTS_BURST_PER_EDGE)
        bucket = self._buckets.get(edge)
        if bucket is None:
            bucket = self._buckets[edge] = [burst, now, 0]
        else:
            bucket[0] = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        bucket[2] += 1
        return False

    def take_dropped(self) -> dict[str, int]:
        """Edges that lost events since the last call, and how many each."""
        out = {}
        for edge, bucket in self._buckets.items():
            if bucket[2]:
                out[edge] = int(bucket[2])
                bucket[2] = 0
        return out

    def forget(self, edge: str) -> int:
        """The edge left: drop its bucket; returns the events it lost that were not reported."""
        bucket = self._buckets.pop(edge, None)
        return int(bucket[2]) if bucket is not None else 0


limiter = EdgeEventLimiter()
DROPPED_PLUGIN, DROPPED_TOPIC = "bridge", "events_dropped"


def _dropped_rows(counts: dict[str, int]) -> list[Row]:
    now = time.time()
    return [(NOTIFICATION, edge, DROPPED_PLUGIN, DROPPED_TOPIC, None, {"dropped": n}, now)
            for edge, n in counts.items()]


async def event_received(edge_name: str, frame: dict[str, Any]) -> None:
    """A plugin on ``edge_name`` emitted an event (an ``event`` frame from its agent, already
    validated by ``protocol.decode``). Never blocks on I/O. Over the edge's rate the event
    is dropped (see :class:`EdgeEventLimiter`); names are made storable here, so that no
    event in the buffer can be refused by the database for them."""
    if not limiter.allow(edge_name):
        metrics.child(metrics.EVENTS_DROPPED, "rate").inc()
        buffer.wake_flusher()  # the flusher reports the loss
        return
    owner = frame.get("owner")
    ts = frame.get("ts")
    buffer.add((
        NOTIFICATION, edge_name, storable_text(frame["plugin"], 100), storable_text(frame["topic"], 100),
        owner if isinstance(owner, int) and not isinstance(owner, bool) else None,
        frame.get("data"),
        ts if isinstance(ts, (int, float)) and not isinstance(ts, bool) and 0 < ts < _YEAR_3000 else time.time(),
    ))


# -- the SSE data of an event (also used for replay) ----------------------------------------


@functools.lru_cache(maxsize=4096)
def _str(value: str) -> str:
    """A JSON string; edge, plugin and topic names repeat endlessly, so cached."""
    return protocol.encode(value)  # type: ignore[arg-type]  # any JSON value encodes


def notification_json(event_id: int, edge: str, plugin: str, topic: str, data_json: str, ts: float) -> str:
    """``{"id", "edge", "plugin", "topic", "data", "ts"}`` with ``data`` already encoded."""
    return (f'{{"id":{event_id},"edge":{_str(edge)},"plugin":{_str(plugin)},"topic":{_str(topic)},'
            f'"data":{data_json},"ts":{ts!r}}}')


def topology_json(event_id: int, edge: str, data: dict[str, Any], ts: float) -> str:
    """``{"id", "edge", "online", "plugins", "ts"}``."""
    return protocol.encode({"id": event_id, "edge": edge, **data, "ts": ts})


def encode_data(data: Any) -> str:
    """The JSON of an event's data; data over EVENT_MAX_BYTES is replaced by a note saying
    so (it would not fit a channel-layer message, and replaying it to every page is waste)."""
    try:
        text = protocol.encode(data)
    except (TypeError, ValueError):
        return '{"error":"unencodable_event"}'
    if "\\u0000" in text:
        # PostgreSQL's jsonb cannot hold NUL characters (a plugin relaying raw output might).
        text = text.replace("\\u0000", "\\ufffd")
    if len(text) > edge_settings.EVENT_MAX_BYTES:
        return f'{{"error":"event_too_large","size":{len(text)},"limit":{edge_settings.EVENT_MAX_BYTES}}}'
    return text


# -- writing and publishing -------------------------------------------------------------------


def _plugins_of(names: set[str]) -> dict[str, list[str]]:
    from ..models import PluginRegistration

    plugins: dict[str, list[str]] = {name: [] for name in names}
    rows = PluginRegistration.objects.filter(edge__name__in=padded(names)).values_list("edge__name", "name")
    for edge, plugin in rows.order_by("edge__name", "name"):
        plugins[edge].append(plugin)
    return plugins


def _write(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Insert ``rows`` in one transaction; returns the published form of each, with its id.

    Raw multi-row INSERTs rather than ``bulk_create``: model instances would cost more CPU
    than the insert, and this thread shares the GIL with the event loop."""
    from ..models import EventRecord

    online = {edge for kind, edge, _, _, _, data, _ in rows if kind == TOPOLOGY and data.get("online")}
    plugins = _plugins_of(online) if online else {}
    prepared = []
    for kind, edge, plugin, topic, owner, data, ts in rows:
        if kind == TOPOLOGY:
            if data.get("online"):
                data = {**data, "plugins": plugins.get(edge, [])}
            data_json = protocol.encode(data)
        else:
            data_json = encode_data(data)
        prepared.append((kind, edge, plugin, topic, owner, data, data_json, ts))

    connection = connections[EventRecord.objects.db]
    quote = connection.ops.quote_name
    table = quote(EventRecord._meta.db_table)
    columns = ", ".join(quote(EventRecord._meta.get_field(f).column)
                        for f in ("at", "kind", "edge", "plugin", "topic", "owner_uid", "data"))
    ids: list[int] = []
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Commit order = id order across processes (see the module docstring).
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_LOCK_KEY])
            # One array per column: seven parameters whatever the batch size (psycopg parses
            # a query with thousands of placeholders anew on every execute, which cost more
            # than the insert). WITH ORDINALITY keeps the rows, and so their ids, in order.
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT a, k, e, p, t, o, d FROM unnest("  # noqa: S608 - names
                "%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::jsonb[]"
                ") WITH ORDINALITY AS u(a, k, e, p, t, o, d, n) ORDER BY n RETURNING id",
                [[datetime.fromtimestamp(row[7], tz=timezone.utc) for row in prepared],
                 [row[0] for row in prepared], [row[1][:63] for row in prepared], [row[2] for row in prepared],
                 [row[3] for row in prepared], [row[4] for row in prepared], [row[6] for row in prepared]])
            ids = sorted(row[0] for row in cursor.fetchall())
        else:
            mark = "(%s, %s, %s, %s, %s, %s, %s)"
            for chunk in chunks(prepared, INSERT_CHUNK):
                params: list[Any] = []
                for kind, edge, plugin, topic, owner, _, data_json, ts in chunk:
                    # What ops.adapt_datetimefield_value() makes of it (naive UTC text), for a
                    # fraction of the cost, which counts in batches of thousands.
                    at = datetime.fromtimestamp(ts, tz=timezone.utc).replace(tzinfo=None).isoformat(" ")
                    params += [at, kind, edge[:63], plugin, topic, owner, data_json]
                sql = f"INSERT INTO {table} ({columns}) VALUES {', '.join([mark] * len(chunk))} RETURNING id"  # noqa: S608 - names, not data
                cursor.execute(sql, params)
                # Rows go in VALUES order with increasing ids; RETURNING's own order is not
                # guaranteed, so sort.
                ids += sorted(row[0] for row in cursor.fetchall())
    out = []
    for event_id, (kind, edge, plugin, topic, owner, data, data_json, ts) in zip(ids, prepared):
        if kind == TOPOLOGY:
            text = topology_json(event_id, edge, data, ts)
        else:
            text = notification_json(event_id, edge, plugin, topic, data_json, ts)
        out.append({"id": event_id, "kind": kind, "edge": edge, "plugin": plugin, "topic": topic, "owner": owner,
                    "json": text})
    return out


def _unstorable(row: Row) -> Row:
    """An event the database refused even alone: a note instead of its data, its names
    made storable once more."""
    kind, edge, plugin, topic, owner, _, ts = row
    return (kind, edge, storable_text(plugin), storable_text(topic), owner, {"error": "unstorable_event"}, ts)


def _write_isolated(rows: list[Row]) -> list[dict[str, Any]]:
    """:func:`_write`, so that no event can hold up the others (``services.rows_write_isolated``):
    an event refused alone is stored as a note, or dropped and counted if even that fails.
    Raises only the errors after which the same rows may be written later."""
    from ..domain.services import rows_write_isolated

    written, dropped = rows_write_isolated(write=_write, rows=rows, repair=_unstorable, what="events")
    if dropped:
        buffer.dropped += dropped
        metrics.child(metrics.EVENTS_DROPPED, "unstorable").inc(dropped)
    return [event for batch in written for event in batch]


# Not thread-sensitive: a batch write must not queue behind (or hold up) the consumers' ORM
# calls, which share the one thread-sensitive executor.
_write_async = database_sync_to_async(_write_isolated, thread_sensitive=False)


def _messages(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Group published events into (group, message) pairs: one per group, split by size;
    topology first, so a stream joins a new edge's group before its notifications follow."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        group = TOPOLOGY_GROUP if event["kind"] == TOPOLOGY else edge_events_group(event["edge"])
        by_group.setdefault(group, []).append(event)
    out = []
    for group in sorted(by_group, key=lambda g: g != TOPOLOGY_GROUP):
        part: list[dict[str, Any]] = []
        size = 0
        for event in by_group[group]:
            if part and size + len(event["json"]) > MESSAGE_BYTES:
                out.append((group, messages.events_message(part)))
                part, size = [], 0
            part.append(event)
            size += len(event["json"]) + 64
        out.append((group, messages.events_message(part)))
    return out


async def publish(events: list[dict[str, Any]]) -> None:
    """Send written events to their channel-layer groups. A failure loses only live delivery
    (subscribers that reconnect get the events from the database)."""
    layer = get_channel_layer()
    for group, message in _messages(events):
        try:
            await layer.group_send(group, message)
        except Exception as exc:
            log.warning("could not publish %d events to %s: %s", len(message["events"]), group, exc)


# Called with each written batch (after it is published), on the flusher's event loop; must
# not block (the notifications worker only wakes up).
written_observers: list = []


async def events_flush() -> bool:
    """Write every buffered event, then publish it; False if the write failed (the events
    go back to the buffer for the next attempt)."""
    async with buffer.lock():
        lost = limiter.take_dropped()
        if lost:
            buffer.rows.extend(_dropped_rows(lost))
        rows = buffer.take()
        if not rows:
            return True
        try:
            events = await _write_async(rows)
        except Exception:
            log.warning("could not write %d events; will retry", len(rows), exc_info=True)
            buffer.put_back(rows)
            return False
        await publish(events)
        for observer in written_observers:
            observer(events)
        return True


def topology_changed_sync(edge_names: list[str], *, online: bool) -> None:
    """:func:`topology_changed` for synchronous code off the event loop (management
    commands): writes and publishes at once."""
    now = time.time()
    rows: list[Row] = [(TOPOLOGY, name, "", "", None, {"online": bool(online)}, now) for name in edge_names]
    if rows:
        async_to_sync(publish)(_write(rows))


def events_flush_sync() -> list[dict[str, Any]]:
    """Write (but do not publish) every buffered event; for tests and commands."""
    rows = buffer.take()
    return _write(rows) if rows else []


def events_prune(*, days: int, batch: int = 5000) -> int:
    """Delete events older than ``days`` days, in batches (no long lock on a large backlog);
    returns how many. A subscriber asking for older ones gets what is left."""
    from ..domain.services import rows_delete_older_than
    from ..models import EventRecord

    return rows_delete_older_than(model=EventRecord, days=days, batch=batch)
