"""A simulated edge: a real WebSocket client speaking protocol v1 (hello, welcome, answers
to requests, pong), light enough that a thousand fit in one process. Used by the benchmarks
(``bench.edges``, ``bench.soak``) and by tests that need many connected edges at once."""

from __future__ import annotations

import asyncio

import websockets

from edge_agent import protocol

MANIFEST = [{"name": "sysinfo", "version": "1.0.0", "routes": [{"method": "GET", "path": "version", "readonly": True}]}]
ANSWER = '{"plugin":"sysinfo","version":"1.0.0"}'


class SimEdge:
    def __init__(self, ws_url: str, token: str) -> None:
        self.ws_url = ws_url
        self.token = token
        self.ws = None
        self.task: asyncio.Task | None = None

    async def connect(self) -> None:
        # proxy=None: websockets would otherwise read the proxy settings from the whole
        # environment for every connection, a fifth of a simulated edge's CPU at 10,000 edges.
        self.ws = await websockets.connect(self.ws_url, additional_headers={"Authorization": f"Bearer {self.token}"},
                                           compression=None, ping_interval=None, max_size=2**22, open_timeout=60,
                                           proxy=None)
        await self.ws.send(protocol.encode({"type": "hello", "protocol": 1, "agent_version": "sim",
                                            "host": {"hostname": "sim"}, "plugins": MANIFEST}))
        welcome = protocol.decode(await self.ws.recv())
        if welcome["type"] != "welcome":
            raise RuntimeError(f"refused: {welcome}")
        self.task = asyncio.create_task(self.serve())

    async def serve(self) -> None:
        try:
            async for raw in self.ws:
                frame = protocol.decode(raw)
                if frame["type"] == "request":
                    await self.ws.send(protocol.encode({"type": "response", "req_id": frame["req_id"], "status": 200,
                                                        "headers": {"content-type": "application/json"},
                                                        "body": ANSWER}))
                elif frame["type"] == "ping":
                    await self.ws.send(protocol.encode({"type": "pong"}))
        except websockets.ConnectionClosed:
            pass

    async def ping(self) -> None:
        """The heartbeat a real agent sends every interval (the bridge counts an edge silent
        for three intervals as gone). Not before the welcome."""
        if self.task is None:
            return
        try:
            await self.ws.send(protocol.encode({"type": "ping", "ts": 0}))
        except websockets.ConnectionClosed:
            pass

    async def close(self) -> None:
        await self.ws.close()
        if self.task:
            await self.task
