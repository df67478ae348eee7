"""Messages every bridge process must see: cache invalidations and edge departures.

Each process's reply inbox (``rpc.py``) joins :data:`BROADCAST_GROUP`, so one
``group_send`` reaches every process whatever the channel layer. Broadcasts on the Redis
pub/sub layer are delivered at most once, so every cache they invalidate also expires by
itself (``CACHE_TTL``).
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .. import messages
from ..messages import BROADCAST_GROUP, TOPOLOGY_GROUP, edge_events_group, invalidation

log = logging.getLogger(__name__)

__all__ = ["BROADCAST_GROUP", "TOPOLOGY_GROUP", "abroadcast", "broadcast", "edge_events_group", "invalidation"]


async def abroadcast(message: dict[str, Any]) -> None:
    """Send ``message`` to every bridge process (including this one).

    An invalidation also takes effect in this process before this returns, so a change
    is never followed by a call served from the stale cache of the process that made it
    (the broadcast reaches this process's inbox a moment later, too).
    """
    if message.get("type") == messages.INVALIDATE:
        from .directory import directory

        directory.invalidate(message.get("kind", ""), message.get("key"))
    layer = get_channel_layer()
    try:
        await layer.group_send(BROADCAST_GROUP, message)
    except Exception:
        # The caches expire by themselves; a lost broadcast only delays an update.
        log.warning("broadcast %s failed", message.get("type"), exc_info=True)


def broadcast(message: dict[str, Any]) -> None:
    """Synchronous :func:`abroadcast`, for services called from views and commands."""
    async_to_sync(abroadcast)(message)

