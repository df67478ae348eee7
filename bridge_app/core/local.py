"""Same-process delivery: the shortcut past the channel layer for channels that live here.

Every edge consumer and every reply inbox registers its channel name with a handler.
:func:`send` hands a message straight to that handler when the channel belongs to this
process, and goes through the channel layer otherwise. The address of an edge is still
its channel name in the database — this is a shortcut, not a routing table — so the
behaviour is the same in one process or many; what changes is the cost. On the embedded
default every proxied call skips two queue hops and two task switches; on Redis the calls
whose edge lives in the receiving process skip two Redis round trips and the msgpack
work that goes with them (measured with bench/proxy.py, docs/BENCHMARKS.md).

Handlers run in the sender's task. They must be quick and must not wait for anything but
their own socket writes (the consumer's handlers write one frame; the inbox's resolve a
future). Messages keep their order per sender, as on the layers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any] | None]

_handlers: dict[str, Handler] = {}


def register(channel: str, handler: Handler) -> None:
    _handlers[channel] = handler


def unregister(channel: str) -> None:
    _handlers.pop(channel, None)


def is_local(channel: str) -> bool:
    return channel in _handlers


async def send(layer: Any, channel: str, message: dict[str, Any]) -> None:
    """Deliver ``message`` to ``channel``: in-process if it lives here, else by the layer.
    Raises what ``layer.send`` raises (ChannelFull, connection errors)."""
    handler = _handlers.get(channel)
    if handler is None:
        await layer.send(channel, message)
        return
    try:
        result = handler(message)
        if result is not None:
            await result
    except Exception:
        # The receiver's problem, not the sender's: the layer would not report it either.
        log.exception("local delivery of %s to %s failed", message.get("type"), channel)
