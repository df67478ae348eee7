"""The relay: how a child edge on a compute node without a route to the bridge reaches it.

A parent edge (on a login node) that starts children listens on the cluster's internal
network for HTTP ``CONNECT`` requests (the standard way through a web proxy, which the
``websockets`` client speaks). A child authenticates with its name and a relay secret
(``Proxy-Authorization: Basic``; both come from its private relay file); the relay then
opens a TCP connection to the parent's own bridge, whatever the request named, and copies
bytes both ways. The child's WebSocket, TLS included, runs end to end through it: the
parent never sees the child's token, and the bridge authenticates the child as usual.

Each child keeps a socket of its own to the bridge, so TCP's flow control applies per
child: a busy child fills only its own buffers (at most ``BUFFER`` bytes in the relay per
direction) and cannot hold up the parent's connection or its siblings'.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from typing import Callable, cast

log = logging.getLogger("edge_agent.relay")

BUFFER = 256 * 1024
HEAD_LIMIT = 8192
HEAD_TIMEOUT = 10.0


class RelayServer:
    """A CONNECT relay to one fixed target ``(host, port)``. ``check(name, secret)`` says
    whether a child may use it."""

    def __init__(self, target: tuple[str, int], check: Callable[[str, str], bool]) -> None:
        self.target = target
        self.check = check
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.active = 0
        self.served = 0
        self._tasks: set[asyncio.Task] = set()

    async def start(self, host: str, port: int = 0) -> int:
        """Listen on ``host:port`` (0: any free port); returns the port."""
        self.server = await asyncio.start_server(self._handle, host, port, limit=HEAD_LIMIT)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("relay for child edges listening on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, OSError):
                return
            status = self._authorize(head)
            if status != 200:
                writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n".encode())
                await writer.drain()
                return
            loop = asyncio.get_running_loop()
            client = cast(asyncio.Transport, writer.transport)  # a socket's: it reads too
            client.pause_reading()
            try:
                upstream, up_protocol = await loop.create_connection(lambda: _Splice(client), *self.target)
            except OSError as exc:
                log.warning("relay cannot reach the bridge at %s:%d: %s", *self.target, exc)
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                client.resume_reading()
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            # From here on bytes go from transport to transport in the callbacks of two small
            # protocols, without tasks or stream buffers in between: the least a login node's
            # agent can spend per relayed message.
            down_protocol = _Splice(upstream)
            down_protocol.partner, up_protocol.partner = up_protocol, down_protocol
            leftover = bytes(reader._buffer)  # type: ignore[attr-defined]  # sent after the head, before our answer (none, normally)
            client.set_protocol(down_protocol)
            for transport in (client, upstream):
                transport.set_write_buffer_limits(high=BUFFER)
            if leftover:
                upstream.write(leftover)
            client.resume_reading()
            self.active += 1
            self.served += 1
            try:
                await asyncio.gather(down_protocol.done, up_protocol.done)
            finally:
                self.active -= 1
                upstream.close()
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def _authorize(self, head: bytes) -> int:
        try:
            lines = head.decode("latin-1").split("\r\n")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            return 400
        method, _, _ = lines[0].partition(" ")
        if method != "CONNECT":
            return 405
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() != "proxy-authorization":
                continue
            scheme, _, encoded = value.strip().partition(" ")
            if scheme.lower() != "basic":
                return 407
            try:
                name, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return 407
            return 200 if self.check(name, secret) else 407
        return 407


_REASONS = {400: "Bad Request", 405: "Method Not Allowed", 407: "Proxy Authentication Required"}


class _Splice(asyncio.Protocol):
    """Reads one side of a relayed connection and writes what it reads to ``peer``. When
    the peer cannot take more (its buffer is over BUFFER), the peer's own splice pauses
    reading here: a slow reader holds up only its own connection."""

    def __init__(self, peer: asyncio.BaseTransport) -> None:
        self.peer = peer
        self.partner: _Splice | None = None  # the splice of the other direction
        self.eof = False
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.peer.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        self.eof = True
        if self.partner is not None and self.partner.eof:
            # Both directions have ended: close both sockets.
            self.peer.close()
            self.partner.peer.close()
            return True
        if self.peer.can_write_eof():  # type: ignore[attr-defined]
            self.peer.write_eof()  # type: ignore[attr-defined]
        return True  # keep the other direction open until it ends too

    def pause_writing(self) -> None:
        self.peer.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self.peer.resume_reading()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.close()
        if not self.done.done():
            self.done.set_result(None)


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
