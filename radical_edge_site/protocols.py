"""The HTTP protocol the bridge runs under uvicorn: httptools, with a deadline for each
request's head.

uvicorn bounds idle keep-alive connections but not a request whose headers arrive slowly:
200 connections that sent one header line every few seconds (slowloris) held 200 server
slots indefinitely. Here the request line and headers must be complete within
``RADICAL_HEADER_TIMEOUT`` seconds (default 20) of the connection opening or of the
request's first byte; otherwise the client gets a 408 and the connection is closed. Bodies
are not under this deadline (a 64 MiB upload on a slow link is legitimate; flow control
bounds what it costs), nor are WebSocket connections once upgraded.

The transport is wrapped in ``edge_agent.coalesce.CoalescingTransport``: a response's head
and body, and the frames of many calls written to one agent's WebSocket in the same pass
of the event loop, leave in one system call (docs/BENCHMARKS.md, "Where the time goes").
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edge_agent.coalesce import CoalescingTransport
from radical_edge_site.env import env_float

HEADER_TIMEOUT = env_float("RADICAL_HEADER_TIMEOUT", 20.0)
_TIMEOUT_BODY = b'{"error":"request_timeout","detail":"request headers not received in time"}'
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


class BridgeHttpProtocol(HttpToolsProtocol):
    # When the head now being received began (None: no head pending), and the one timer
    # that checks it. A timer per request (armed at its first byte, cancelled once its
    # headers were in) cost two timer-heap operations per call; this one fires at most once
    # per HEADER_TIMEOUT per connection and re-arms itself only while a head is pending.
    _head_started: float | None = None
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        # An upgraded connection hands this same wrapper to the WebSocket protocol.
        super().connection_made(CoalescingTransport(transport, self.loop))
        self._head_begins()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begins()  # a keep-alive connection's next request

    def on_headers_complete(self) -> None:
        self._head_started = None
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_started = None
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

    def _head_begins(self) -> None:
        if HEADER_TIMEOUT > 0:
            self._head_started = self.loop.time()
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_at(self._head_started + HEADER_TIMEOUT, self._check_head)

    def _check_head(self) -> None:
        self._head_deadline = None
        if self._head_started is None:
            return  # no head pending: the next one arms the timer again
        due = self._head_started + HEADER_TIMEOUT
        if due > self.loop.time():
            self._head_deadline = self.loop.call_at(due, self._check_head)
            return
        self._head_started = None
        if not self.transport.is_closing():
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()
