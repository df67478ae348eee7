"""A bridge process shutting down gracefully (SIGTERM): whether it is, and what HTTP does then.

From ``begin()`` on, every HTTP answer says ``Connection: close``. A proxy in front (nginx
with upstream keep-alive) then stops reusing its connections to this process one answer at
a time, and sends new requests to the other processes, instead of having a connection closed
under a request it was just sending (which nginx cannot retry for a POST: the caller would
get 502). Agents that reach the process anyway are sent on (``consumers``).
"""

from __future__ import annotations

_in_progress = False


def begin() -> None:
    global _in_progress
    _in_progress = True


def in_progress() -> bool:
    return _in_progress


def others_alive() -> bool:
    """Whether another bridge process is alive to take this one's agents and traffic (the
    process registry in Redis says so); never in the embedded single-process mode."""
    from . import processes

    registry = processes.registry
    return registry is not None and not registry.outage and len(registry.live) > 1


class CloseConnections:
    """ASGI middleware: ``Connection: close`` on every HTTP answer while shutting down."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if not _in_progress or scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_closing(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        return await self.app(scope, receive, send_closing)
