"""Events that leave the bridge towards people: edges coming and going, plugin notifications.

Everything is published to channel-layer groups so that it reaches live pages and event
streams on every bridge process. Each message carries the edge name and, for plugin
events, the owner's user id, so subscribers can filter what a viewer may see.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from channels.layers import get_channel_layer

from .broadcast import TOPOLOGY_GROUP, edge_events_group

log = logging.getLogger(__name__)


async def _group_send(group: str, message: dict[str, Any]) -> None:
    try:
        await get_channel_layer().group_send(group, message)
    except Exception as exc:
        log.warning("could not publish %s to %s: %s", message.get("type"), group, exc)


async def topology_changed(edge_name: str, *, online: bool) -> None:
    """An edge connected or disconnected (its plugins may have changed too)."""
    await _group_send(TOPOLOGY_GROUP, {
        "type": "portal.topology", "edge": edge_name, "online": online, "ts": time.time(),
    })


async def event_received(edge_name: str, frame: dict[str, Any]) -> None:
    """A plugin on ``edge_name`` emitted an event (an ``event`` frame from its agent)."""
    owner = frame.get("owner")
    await _group_send(edge_events_group(edge_name), {
        "type": "portal.event",
        "edge": edge_name,
        "plugin": frame["plugin"],
        "topic": frame["topic"],
        "data": frame.get("data"),
        "owner": owner if isinstance(owner, int) and not isinstance(owner, bool) else None,
        "ts": frame.get("ts") if isinstance(frame.get("ts"), (int, float)) else time.time(),
    })
