"""The channel-layer messages between the parts of the bridge, defined once (as
``edge_agent/protocol.py`` defines the wire to the agent).

Channels and groups:

* an edge's channel (``edge_channel_prefix(process id)`` + a random part), read by the
  ``EdgeConsumer`` holding its socket; the process id in the name tells which bridge
  process holds the edge (``process_of``);
* a process's reply inbox (``INBOX_PREFIX``), read by ``rpc.Inbox``; it joins
  ``BROADCAST_GROUP``, which reaches every bridge process;
* ``TOPOLOGY_GROUP`` and ``edge_events_group(edge)``, joined by event streams (``sse.py``)
  and MCP's job follower, where ``events.py`` publishes.

Messages, by who reads them:

* to an edge's consumer: ``edge.request`` {req_id, reply_to, frame}, ``edge.request.chunk``
  {req_id, seq, data, last}, ``edge.cancel`` {req_id, reason}, ``edge.credit`` {req_id,
  chunks}, ``edge.superseded`` {}, ``edge.kick`` {reason, detail, retry[, token_id]};
* to a reply inbox: ``rpc.response`` {req_id, status, headers, body, stream, length},
  ``rpc.chunk`` {req_id, seq, data, last}, ``rpc.error`` {req_id, status, error, detail},
  ``rpc.credit`` {req_id, chunks};
* to every process (the broadcast group): ``bridge.invalidate`` {kind, key},
  ``bridge.edge_down`` {channel_name, delivered, detail};
* to event groups: ``portal.events`` {events};
* the readiness probe's own channel: ``ready.ping``.
"""

from __future__ import annotations

import re
from typing import Any

# -- channels and groups --------------------------------------------------------------------

BROADCAST_GROUP = "bridge.broadcast"
TOPOLOGY_GROUP = "portal.topology"
INBOX_PREFIX = "bridge.inbox."
EVENTS_PREFIX = "bridge.events."
MCP_PREFIX = "bridge.mcp."
READY_PREFIX = "bridge.ready."

_PROCESS_IN_CHANNEL = re.compile(r"bridge\.edge\.([0-9a-f]{12})\.")


def edge_channel_prefix(process_id: str) -> str:
    """The prefix of the channels of edges held by bridge process ``process_id``."""
    return f"bridge.edge.{process_id}."


def process_of(channel_name: str) -> str | None:
    """The id of the bridge process holding an edge channel (None if not ours to know)."""
    match = _PROCESS_IN_CHANNEL.search(channel_name)
    return match.group(1) if match else None


def edge_events_group(edge_name: str) -> str:
    """The group of an edge's notifications."""
    return f"portal.edge.{edge_name}"


# -- types ----------------------------------------------------------------------------------

EDGE_REQUEST = "edge.request"
EDGE_REQUEST_CHUNK = "edge.request.chunk"
EDGE_CANCEL = "edge.cancel"
EDGE_CREDIT = "edge.credit"
EDGE_SUPERSEDED = "edge.superseded"
EDGE_KICK = "edge.kick"

RPC_RESPONSE = "rpc.response"
RPC_CHUNK = "rpc.chunk"
RPC_ERROR = "rpc.error"
RPC_CREDIT = "rpc.credit"

INVALIDATE = "bridge.invalidate"
EDGE_DOWN = "bridge.edge_down"

EVENTS = "portal.events"
READY_PING = "ready.ping"


# -- constructors ---------------------------------------------------------------------------


def edge_request(req_id: str, reply_to: str, frame: str) -> dict[str, Any]:
    """A request for an edge: ``frame`` is the encoded protocol frame, ``reply_to`` the
    caller's inbox."""
    return {"type": EDGE_REQUEST, "req_id": req_id, "reply_to": reply_to, "frame": frame}


def edge_request_chunk(req_id: str, seq: int, data: bytes, last: bool) -> dict[str, Any]:
    return {"type": EDGE_REQUEST_CHUNK, "req_id": req_id, "seq": seq, "data": data, "last": last}


def edge_cancel(req_id: str, reason: str) -> dict[str, Any]:
    return {"type": EDGE_CANCEL, "req_id": req_id, "reason": reason}


def edge_credit(req_id: str, chunks: int) -> dict[str, Any]:
    """The caller took ``chunks`` more pieces of a streamed answer: the agent may send more."""
    return {"type": EDGE_CREDIT, "req_id": req_id, "chunks": chunks}


def edge_superseded() -> dict[str, Any]:
    """A newer connection of the edge took over: the old one drains and closes."""
    return {"type": EDGE_SUPERSEDED}


def edge_kick(reason: str, detail: str, retry: bool, token_id: int | None = None) -> dict[str, Any]:
    """Disconnect the edge, telling the agent why; with ``token_id``, only a connection made
    with that token."""
    message: dict[str, Any] = {"type": EDGE_KICK, "reason": reason, "detail": detail, "retry": retry}
    if token_id is not None:
        message["token_id"] = token_id
    return message


def rpc_response(req_id: str, status: int, headers: dict[str, Any], body: bytes, stream: bool,
                 length: Any) -> dict[str, Any]:
    """The head of an answer (and its body, unless ``stream``)."""
    return {"type": RPC_RESPONSE, "req_id": req_id, "status": status, "headers": headers,
            "body": body, "stream": stream, "length": length}


def rpc_chunk(req_id: str, seq: int, data: bytes, last: bool) -> dict[str, Any]:
    return {"type": RPC_CHUNK, "req_id": req_id, "seq": seq, "data": data, "last": last}


def rpc_error(req_id: str, status: int, error: str, detail: str) -> dict[str, Any]:
    """The call failed on the way; the caller answers ``{"error", "detail"}`` with ``status``."""
    return {"type": RPC_ERROR, "req_id": req_id, "status": status, "error": error, "detail": detail}


def rpc_credit(req_id: str, chunks: int) -> dict[str, Any]:
    """The agent may take ``chunks`` more pieces of an upload."""
    return {"type": RPC_CREDIT, "req_id": req_id, "chunks": chunks}


def invalidation(kind: str, key: str | None = None) -> dict[str, Any]:
    """Drop cached ``kind`` (``edge``, ``token`` or ``access``) entries; ``key`` None means
    everything of it."""
    return {"type": INVALIDATE, "kind": kind, "key": key}


def edge_down(channel_name: str, detail: str, delivered: list[str] | None = None) -> dict[str, Any]:
    """The edge on ``channel_name`` disconnected: calls waiting on it fail now; those in
    ``delivered`` (req ids the agent had been sent) as disconnected, the others are sent
    again where the edge is now."""
    return {"type": EDGE_DOWN, "channel_name": channel_name, "delivered": list(delivered or ()), "detail": detail}


def events_message(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Published events for the streams in a group."""
    return {"type": EVENTS, "events": events}


def ready_ping() -> dict[str, Any]:
    return {"type": READY_PING}
