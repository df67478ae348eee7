"""A plugin for tests: echoes bodies, sleeps on demand, produces large payloads, and
records cancellations so tests can check that the bridge really cancels work."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

from edge_agent.plugin import Plugin, Request, Response, route


class EchoPlugin(Plugin):
    name = "echo"
    version = "0.1.0"
    description = "test plugin"

    def __init__(self, host, config=None) -> None:
        super().__init__(host, config)
        self.cancelled: list[str] = []
        self.started: list[str] = []

    @route("GET", "ping")
    async def ping(self, request: Request) -> dict:
        return {"pong": True}

    @route("POST", "echo")
    async def echo(self, request: Request) -> Response:
        return Response(200, request.body, {"content-type": request.headers.get("content-type",
                                                                             "application/octet-stream")})

    @route("GET", "whoami")
    async def whoami(self, request: Request) -> dict:
        return {"caller": request.caller.to_dict(), "headers": request.headers, "query": request.query}

    @route("GET", "sleep/{seconds}")
    async def sleep(self, request: Request, seconds: str) -> dict:
        self.started.append(request.req_id)
        try:
            await asyncio.sleep(float(seconds))
        except asyncio.CancelledError:
            self.cancelled.append(request.req_id)
            raise
        return {"slept": float(seconds)}

    @route("GET", "block/{seconds}")
    def block(self, request: Request, seconds: str) -> dict:
        time.sleep(float(seconds))  # a blocking handler runs in a worker thread
        return {"blocked": float(seconds), "thread": threading.current_thread().name}

    @route("GET", "cancelled")
    async def cancelled_list(self, request: Request) -> dict:
        return {"cancelled": self.cancelled, "started": self.started}

    @route("GET", "bytes/{size}")
    async def produce(self, request: Request, size: str) -> Response:
        n = int(size)
        seed = hashlib.sha256(size.encode()).digest()
        block = (seed * (65536 // len(seed) + 1))[:65536]
        data = (block * (n // len(block) + 1))[:n]
        return Response(200, data, {"content-type": "application/octet-stream",
                                    "x-edge-sha256": hashlib.sha256(data).hexdigest()})

    @route("POST", "digest")
    async def digest(self, request: Request) -> dict:
        return {"size": len(request.body), "sha256": hashlib.sha256(request.body).hexdigest()}

    @route("POST", "emit/{count}")
    def emit_many(self, request: Request, count: str) -> dict:
        # From a worker thread, on purpose: events must survive the thread hop. With
        # ?tag=T every event also carries T, so that a soak can tell its calls' events apart.
        tag = request.arg("tag")
        for i in range(int(count)):
            self.emit("tick", {"i": i, "tag": tag} if tag else {"i": i}, owner=request.caller)
        return {"emitted": int(count)}

    @route("GET", "html")
    async def html(self, request: Request) -> Response:
        return Response(200, b"<script>alert(1)</script>", {"content-type": "text/html", "set-cookie": "x=1"})
