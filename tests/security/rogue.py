"""A rogue agent: a real WebSocket client driven by the test, in a thread of its own, so
that synchronous tests can make calls through the bridge while it answers them.

It speaks just enough of protocol v1 to be accepted (hello, pong) and otherwise sends
whatever the test tells it to, including frames no honest agent would send."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

import websockets

from edge_agent import protocol

ROUTES = [{"method": "GET", "path": "ping", "readonly": True}, {"method": "POST", "path": "do", "readonly": False}]
MANIFEST = [{"name": "rogue", "version": "6.6.6", "routes": ROUTES}]

Answer = Callable[[dict[str, Any]], "dict[str, Any] | str | None"]


def ws_url(bridge_url: str) -> str:
    return bridge_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/register"


class RogueAgent:
    """``answer(request_frame)`` returns the frame to send back (a dict, or raw text), or
    None to stay silent. ``welcome`` is the bridge's first answer (a welcome or a bye)."""

    def __init__(self, bridge_url: str, token: str, *, hello: dict[str, Any] | None = None,
                 answer: Answer | None = None) -> None:
        self.url = ws_url(bridge_url)
        self.token = token
        self.hello = hello or {"type": "hello", "protocol": 1, "agent_version": "rogue",
                               "host": {"hostname": "rogue"}, "plugins": MANIFEST}
        self.answer = answer or (lambda frame: None)
        self.welcome: dict[str, Any] | None = None
        self.received: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._ws = None

    def start(self, timeout: float = 20.0) -> RogueAgent:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result(timeout)
        return self

    async def _connect(self) -> None:
        self._ws = await websockets.connect(self.url, additional_headers={"Authorization": f"Bearer {self.token}"},
                                            compression=None, ping_interval=None, max_size=2**24)
        await self._ws.send(protocol.encode(self.hello))
        self.welcome = protocol.decode(await self._ws.recv())
        self._loop.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            async for raw in self._ws:
                if isinstance(raw, bytes):
                    continue
                frame = protocol.decode(raw)
                self.received.append(frame)
                if frame["type"] == protocol.PING:
                    await self._ws.send(protocol.encode({"type": protocol.PONG}))
                elif frame["type"] == protocol.REQUEST:
                    reply = self.answer(frame)
                    if reply is not None:
                        await self._ws.send(reply if isinstance(reply, str) else protocol.encode(reply))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()

    def send(self, frame: dict[str, Any] | str, timeout: float = 10.0) -> None:
        text = frame if isinstance(frame, str) else protocol.encode(frame)
        asyncio.run_coroutine_threadsafe(self._ws.send(text), self._loop).result(timeout)

    def send_many(self, frames: list[str], timeout: float = 60.0) -> None:
        """Send pre-encoded frames as fast as the socket takes them."""
        async def go() -> None:
            for text in frames:
                await self._ws.send(text)

        asyncio.run_coroutine_threadsafe(go(), self._loop).result(timeout)

    def stop(self) -> None:
        if self._ws is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop).result(10)
            except Exception:
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def response(frame: dict[str, Any], status: int, body: str = '{"ok":true}') -> dict[str, Any]:
    return {"type": protocol.RESPONSE, "req_id": frame["req_id"], "status": status,
            "headers": {"content-type": "application/json"}, "body": body}
