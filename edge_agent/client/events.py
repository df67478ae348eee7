"""Live events from the bridge (``GET /events``, Server-Sent Events) for SDK users.

    bc = BridgeClient(url, token=...)
    sub = bc.register_callback("polaris", "psij", "job_status", lambda ev: print(ev["data"]))
    ...
    sub.stop()

    for ev in bc.events(edge="polaris", topic="job_status"):   # or as an iterator
        print(ev["id"], ev["data"]["state"])

Each event is the JSON the bridge sent plus its ``type``: ``notification`` events are
``{"type", "id", "edge", "plugin", "topic", "data", "ts"}``, ``topology`` events
``{"type", "id", "edge", "online", "plugins", "ts"}``.

Both forms reconnect by themselves: after the delay the bridge suggests (``retry:``),
growing while the bridge stays away, and resume after the last event seen
(``Last-Event-ID``), so a bridge restart loses nothing. Errors that retrying cannot fix
(401 bad token, 403, 404 unknown edge, 400) end the subscription. TLS is verified exactly as
for the rest of the SDK (the stream uses the client's own connection settings).
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import socket
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import httpx

from ..backoff import backoff_delay
from .errors import BridgeError, ConnectionFailed

if TYPE_CHECKING:  # pragma: no cover
    from .bridge import BridgeClient

log = logging.getLogger(__name__)

# Errors that a reconnect cannot fix.
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405})
# Ids remembered to drop an event delivered twice across a reconnect.
SEEN_IDS = 10_000
DEFAULT_RETRY = 3.0
# The bridge comments at least every 15 s; silence three times that long means a dead link.
DEFAULT_READ_TIMEOUT = 60.0


@dataclass
class ServerSentEvent:
    event: str
    data: str
    id: str | None


class SSEParser:
    """Incremental ``text/event-stream`` parser, as the WHATWG HTML standard specifies it:
    lines end in CR, LF or CRLF (and nothing else: U+2028 inside JSON is data), ``data``
    lines join with newlines, an ``id`` persists until changed (an id-only block moves the
    last event id without dispatching anything), comments and unknown fields are ignored."""

    def __init__(self) -> None:
        self._buf = b""
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id: str | None = None
        self.retry: int | None = None  # milliseconds

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Parse ``chunk``; return the events it completed."""
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buf = self._buf + chunk
        if not self._started and buf:
            if len(buf) < 3 and b"\xef\xbb\xbf".startswith(buf):
                self._buf = buf
                return []
            self._started = True
            if buf.startswith(b"\xef\xbb\xbf"):
                buf = buf[3:]
        out: list[ServerSentEvent] = []
        start = 0
        n = len(buf)
        while True:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            line = buf[start:end]
            start = end + 1
            if buf[end:end + 1] == b"\r":
                if start < n and buf[start:start + 1] == b"\n":
                    start += 1
                elif start == n:
                    self._skip_lf = True  # the LF of this CRLF may open the next chunk
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                out.append(event)
        self._buf = buf[start:]
        return out

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry" and value.isdigit() and value.isascii():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data), self.last_event_id)


def _wanted(value: str | None) -> str | None:
    return None if value in (None, "", "*") else value


class EventReader:
    """Iterates over the events of ``GET /events``, reconnecting as described in the module
    docstring. ``abort()`` (from any thread) ends a blocked read at once."""

    def __init__(self, bridge: BridgeClient, *, edge: str | None = None, plugin: str | None = None,
                 topic: str | None = None, types: Iterable[str] | None = None,
                 last_event_id: str | None = None, backoff_max: float = 30.0,
                 read_timeout: float = DEFAULT_READ_TIMEOUT, stop: threading.Event | None = None,
                 on_connect: Callable[[], None] | None = None) -> None:
        self.bridge = bridge
        self.edge, self.plugin, self.topic = _wanted(edge), _wanted(plugin), _wanted(topic)
        self.types = frozenset(types) if types is not None else None
        self.last_event_id = None if last_event_id is None else str(last_event_id)
        self.backoff_max = backoff_max
        self.read_timeout = read_timeout
        self.stop = stop or threading.Event()
        self.on_connect = on_connect
        self.retry = DEFAULT_RETRY
        self.connected = False
        self._response: httpx.Response | None = None
        self._seen: collections.deque[int] = collections.deque(maxlen=SEEN_IDS)
        self._seen_set: set[int] = set()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        failures = 0
        while not self.stop.is_set():
            try:
                for event in self._stream():
                    failures = 0
                    yield event
                failures = 0  # the bridge ended the stream (restart, too far behind): come back
            except BridgeError as exc:
                if exc.status in PERMANENT_STATUSES:
                    raise
                failures += 1
                log.warning("event stream: %s; reconnecting", exc)
            except (httpx.TransportError, httpx.StreamError) as exc:
                if self.stop.is_set():
                    return
                failures += 1
                log.info("event stream interrupted (%s); reconnecting", exc.__class__.__name__)
            finally:
                self.connected = False
                self._response = None
            delay = backoff_delay(failures - 1, base=self.retry, cap=max(self.backoff_max, self.retry),
                                  jitter=(0.8, 1.2))
            if self.stop.wait(delay):
                return

    def _stream(self) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in (("edge", self.edge), ("plugin", self.plugin), ("topic", self.topic)) if v}
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        timeout = httpx.Timeout(10.0, read=self.read_timeout)
        try:
            with self.bridge._http.stream("GET", "/events", params=params, headers=headers,
                                          timeout=timeout) as response:
                if response.status_code != 200:
                    response.read()
                    from .bridge import _error_from

                    raise _error_from(response)
                self._response = response
                if self.stop.is_set():
                    return
                parser = SSEParser()
                for chunk in response.iter_bytes():
                    for sse in parser.feed(chunk):
                        event = self._event(sse)
                        if event is not None:
                            yield event
                    if parser.last_event_id is not None:
                        self.last_event_id = parser.last_event_id
                    if parser.retry is not None:
                        self.retry = parser.retry / 1000.0
                    if not self.connected and (parser.retry is not None or parser.last_event_id is not None):
                        # The bridge sends retry: once the stream has subscribed, not with
                        # the headers: only from then on do new events reach this stream.
                        self.connected = True
                        if self.on_connect is not None:
                            self.on_connect()
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(0, "timeout", f"no data from {self.bridge.url}/events: {exc}") from exc

    def _event(self, sse: ServerSentEvent) -> dict[str, Any] | None:
        if sse.id is not None:
            self.last_event_id = sse.id
        if self.types is not None and sse.event not in self.types:
            return None
        try:
            body = json.loads(sse.data)
        except ValueError:
            log.warning("event stream: undecodable %s event dropped", sse.event)
            return None
        if not isinstance(body, dict):
            return None
        event_id = body.get("id")
        if isinstance(event_id, int):
            if event_id in self._seen_set:
                return None  # delivered before a reconnect already
            if len(self._seen) == self._seen.maxlen:
                self._seen_set.discard(self._seen[0])
            self._seen.append(event_id)
            self._seen_set.add(event_id)
        if self.edge is not None and body.get("edge") != self.edge:
            return None
        if sse.event == "notification" and (
                (self.plugin is not None and body.get("plugin") != self.plugin)
                or (self.topic is not None and body.get("topic") != self.topic)):
            return None
        return {"type": sse.event, **body}

    def abort(self) -> None:
        """End a read blocked in another thread (closing an httpx response from another
        thread does not wake a blocked recv; shutting the socket down does)."""
        response = self._response
        if response is None:
            return
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class EventSubscription:
    """Calls ``callback(event)`` in a background thread for each event that matches
    ``edge``, ``plugin`` and ``topic`` (None or ``"*"``: any) and ``types`` (default:
    notifications only). Start with :meth:`start`, end with :meth:`stop`.

    ``last_event_id`` starts from the events after that id (``"0"``: every event the
    bridge still keeps); otherwise from now. ``on_error(exc)`` learns of an error that ends
    the subscription (bad token, unknown edge); ``error`` keeps it. An exception raised by
    ``callback`` is logged and the subscription carries on.
    """

    def __init__(self, bridge: BridgeClient, *, edge: str | None = None, plugin: str | None = None,
                 topic: str | None = None, callback: Callable[[dict[str, Any]], Any],
                 types: Iterable[str] | None = ("notification",), last_event_id: str | None = None,
                 backoff_max: float = 30.0, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 on_error: Callable[[BaseException], Any] | None = None) -> None:
        self.callback = callback
        #: The callback as given to ``register_callback`` in the original's form, if it was.
        self.legacy_callback: Callable[..., Any] | None = None
        self.on_error = on_error
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._reader = EventReader(bridge, edge=edge, plugin=plugin, topic=topic, types=types,
                                   last_event_id=last_event_id, backoff_max=backoff_max,
                                   read_timeout=read_timeout, stop=self._stop, on_connect=self._connected.set)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"radical-edge-events-{edge or 'all'}")

    @property
    def last_event_id(self) -> str | None:
        """The id of the last event seen: where the subscription resumes."""
        return self._reader.last_event_id

    @property
    def connected(self) -> bool:
        return self._reader.connected

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> EventSubscription:
        self._thread.start()
        return self

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the first connection is up (events from then on are delivered)."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """End the subscription; returns once the thread has finished (or after ``timeout``)."""
        self._stop.set()
        self._reader.abort()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            for event in self._reader:
                if self._stop.is_set():
                    return
                try:
                    self.callback(event)
                except Exception:
                    log.exception("event callback failed")
        except Exception as exc:
            if self._stop.is_set():
                return
            self.error = exc
            log.error("event subscription ended: %s", exc)
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception:
                    log.exception("on_error callback failed")


class EventIterator:
    """The events as an iterator that subscribes when it is made, not at the first
    ``next()``: an event sent between ``bc.events()`` and the first ``next()`` is kept
    (a generator would only connect once iterated, and miss it).

    A background :class:`EventSubscription` reads the stream into a queue; ``next()`` takes
    from it and raises the error that ended the subscription (bad token, unknown edge).
    Creation waits up to ``connect_timeout`` seconds for the stream to be up (events from
    then on are delivered); if the bridge is away it returns and keeps trying. ``close()``
    (or leaving a ``with`` block) ends the subscription.
    """

    _END = object()

    def __init__(self, bridge: BridgeClient, *, types: Iterable[str] | None = None,
                 connect_timeout: float = 10.0, **kwargs: Any) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ended = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._bridge = bridge
        # The thread must not keep this iterator alive: once the caller drops it, __del__
        # ends the subscription (as closing a generator did).
        me = weakref.ref(self)

        def failed(exc: BaseException) -> None:
            it = me()
            if it is not None:
                it._failed(exc)

        self._sub = EventSubscription(bridge, callback=self._queue.put, types=types, on_error=failed, **kwargs)
        self._sub.start()
        bridge._subscriptions.append(self._sub)
        deadline = time.monotonic() + connect_timeout
        while not self._sub.wait_connected(0.05):
            if self._ended.is_set() or time.monotonic() >= deadline:
                break

    def _failed(self, exc: BaseException) -> None:
        self._error = exc
        self._ended.set()
        self._queue.put(self._END)

    @property
    def last_event_id(self) -> str | None:
        return self._sub.last_event_id

    def __iter__(self) -> EventIterator:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._closed:
            raise StopIteration
        item = self._queue.get()
        if item is self._END:
            self.close()
            if self._error is not None:
                raise self._error
            raise StopIteration
        return item

    def close(self, timeout: float = 5.0) -> None:
        """End the subscription (idempotent)."""
        if not self._closed:
            self._closed = True
            self._sub.stop(timeout)
            try:
                self._bridge._subscriptions.remove(self._sub)
            except ValueError:
                pass

    def __enter__(self) -> EventIterator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close(timeout=0)
        except Exception:
            pass


def iter_events(bridge: BridgeClient, **kwargs: Any) -> EventIterator:
    """The events as an iterator, subscribed at once (see :class:`EventIterator`; the
    keyword arguments are :class:`EventSubscription`'s); reconnects by itself, never ends
    unless an error that retrying cannot fix occurs."""
    return EventIterator(bridge, **kwargs)
