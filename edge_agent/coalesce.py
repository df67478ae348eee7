"""Write coalescing: what a protocol writes in one pass of the event loop leaves in one
system call.

A proxied call is a handful of small writes: the bridge answers an HTTP request with its
head and then its body (two ``send`` calls into uvicorn, two ``write`` system calls), and
under load many requests for one agent, and many of the agent's answers, are written to
the same WebSocket in the same pass of the loop. On loopback and on a LAN each write is a
TCP segment whose processing (and the wake-up of the reader) the writer pays for; these
writes were the largest single item of the bridge's CPU per call (docs/BENCHMARKS.md,
"Where the time goes").

:class:`CoalescingTransport` wraps an asyncio transport: the first ``write`` of a pass
schedules a flush with ``call_soon``, later writes of the same pass join it, and the flush
hands everything to the real transport as one buffer. Nothing waits longer than the rest
of the current pass (the flush runs before the loop polls for I/O again), ``close`` and
``write_eof`` flush first, ``abort`` drops what is pending, and everything else
(flow control, ``get_extra_info``, ``set_protocol``) is the real transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    __slots__ = ("_loop", "_pending", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._transport = transport
        self._loop = loop or asyncio.get_event_loop()
        self._pending: list[bytes] | None = None
        self._size = 0

    @property
    def wrapped(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not isinstance(data, bytes):
            data = bytes(data)  # the caller may reuse its buffer once write() returns
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._size = len(data)
            self._loop.call_soon(self.flush)
        else:
            pending.append(data)
            self._size += len(data)

    def writelines(self, lines) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self._size = 0
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._size = 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
