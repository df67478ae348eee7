"""Job state changes as MCP resource updates (``subscriptions/listen``, protocol 2026-07-28).

A client follows jobs by listening on their status resources,
``radical-edge://jobs/{edge}/{job_id}``; each psij ``job_status`` event of such a job is
sent on the listen stream as ``notifications/resources/updated``, and the client reads the
resource again. The events come the way ``GET /events`` gets them (events.py): from the
channel-layer group of the edge, in whichever bridge process the listener is connected to,
and only those the caller may see (``sse.may_see``: its own jobs, or any job of an edge it
owns or administers). A URI the caller may not see is acknowledged like any other and never
fires, as the specification has it for resources that do not exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from channels.layers import get_channel_layer
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, SubscriptionsListenRequestParams, SubscriptionsListenResult

from .. import messages
from ..core.directory import directory
from ..messages import edge_events_group
from ..streams.events import NOTIFICATION
from ..streams.sse import may_see
from .calls import PRINCIPAL_KEY

log = logging.getLogger(__name__)

JOB_URI = "radical-edge://jobs/{edge}/{job_id}"
_JOB_URI = re.compile(r"^radical-edge://jobs/([^/]+)/([^/]+)$")
# Listen streams one process serves at once (each holds a channel and its groups).
MAX_STREAMS = 1000


class JobListen:
    """The ``subscriptions/listen`` handler: one SDK ``ListenHandler`` per stream, fed with
    the updates of the jobs it asked for."""

    def __init__(self) -> None:
        self.streams = 0

    async def __call__(self, ctx: Any, params: SubscriptionsListenRequestParams) -> SubscriptionsListenResult:
        principal = (getattr(ctx.request, "scope", None) or {}).get(PRINCIPAL_KEY)
        if principal is None:
            raise MCPError(INTERNAL_ERROR, "unauthorized")
        if self.streams >= MAX_STREAMS:
            raise MCPError(INTERNAL_ERROR, f"this bridge process follows {MAX_STREAMS} listen streams already; "
                                           "retry shortly")
        wanted: dict[tuple[str, str], str] = {}
        for uri in params.notifications.resource_subscriptions or ():
            match = _JOB_URI.match(str(uri))
            if match:
                wanted[(match[1], match[2])] = str(uri)
        roles: dict[str, str] = {}
        for edge in {edge for edge, _ in wanted}:
            entry = await directory.edge(edge)
            role = entry.role_for(principal) if entry is not None else None
            if role is not None:
                roles[edge] = role
        bus = InMemorySubscriptionBus()
        layer = get_channel_layer()
        channel = await layer.new_channel(messages.MCP_PREFIX)
        for edge in roles:
            await layer.group_add(edge_events_group(edge), channel)

        async def feed() -> None:
            while True:
                message = await layer.receive(channel)
                if message.get("type") != messages.EVENTS:
                    continue
                for event in message.get("events") or ():
                    uri = _job_uri(event, wanted, roles, principal)
                    if uri is not None:
                        await bus.publish(ResourceUpdated(uri))

        self.streams += 1
        feeder = asyncio.get_running_loop().create_task(feed(), name="mcp-listen-feed")
        try:
            return await ListenHandler(bus, max_subscriptions=1)(ctx, params)
        finally:
            self.streams -= 1
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
            for edge in roles:
                try:
                    await layer.group_discard(edge_events_group(edge), channel)
                except Exception:  # noqa: S112 - the layer is away; a dead channel's memberships expire
                    continue


def _job_uri(event: dict[str, Any], wanted: dict[Any, str], roles: dict[Any, str],
             principal: Any) -> str | None:
    """The subscribed URI this event updates, if the caller may see it."""
    if event.get("kind") != NOTIFICATION or event.get("plugin") != "psij" or event.get("topic") != "job_status":
        return None
    edge = event.get("edge")
    if not may_see(principal, roles.get(edge), NOTIFICATION, event.get("owner")):
        return None
    try:
        data = json.loads(event["json"]).get("data") or {}
    except (ValueError, KeyError, AttributeError):
        return None
    return wanted.get((edge, data.get("job_id"))) if isinstance(data, dict) else None
