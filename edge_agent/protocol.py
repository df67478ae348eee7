"""The bridge <-> agent wire protocol, version 1.

This module is the single definition of the protocol; the bridge imports it too.

Frames are JSON text messages, one object per frame, each with a ``"type"``:

==========  ===============  ==============================================================
type        direction        fields
==========  ===============  ==============================================================
hello       agent -> bridge  protocol, agent_version, host{}, plugins[]
welcome     bridge -> agent  protocol, edge, session_id, limits{}
request     bridge -> agent  req_id, method, plugin, path, query, headers{}, caller{}, body*
response    agent -> bridge  req_id, status, headers{}, body*
cancel      bridge -> agent  req_id, reason
event       agent -> bridge  plugin, topic, data, owner, seq, ts
ping/pong   both             ts
error       both             error, detail, req_id?
bye         both             reason, detail, retry
credit      both             req_id, chunks
==========  ===============  ==============================================================

``body*``: a request or response carries its body in exactly one way:
``body`` (UTF-8 text), ``body_b64`` (small binary) or ``stream: true`` with ``length``, in
which case the body follows as binary WebSocket frames (see :func:`pack_chunk`), so large
payloads never travel as base64 inside JSON. Chunks of one body are numbered from 0 and the
last one carries the ``LAST`` flag; chunks of different requests may interleave.

Streams are flow-controlled: a sender may have ``stream_window`` chunks (from ``welcome``)
unacknowledged; the receiver grants more with ``credit`` frames as it consumes them, so
neither a slow client nor a slow agent makes the bridge buffer a whole body.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

try:  # orjson is several times faster; the agent works without it (stdlib json).
    import orjson
except ImportError:  # pragma: no cover - exercised on agents without orjson
    orjson = None  # type: ignore[assignment]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

HELLO = "hello"
WELCOME = "welcome"
REQUEST = "request"
RESPONSE = "response"
CANCEL = "cancel"
EVENT = "event"
PING = "ping"
PONG = "pong"
ERROR = "error"
BYE = "bye"
CREDIT = "credit"

FRAME_TYPES = frozenset({HELLO, WELCOME, REQUEST, RESPONSE, CANCEL, EVENT, PING, PONG, ERROR, BYE, CREDIT})

# Bodies up to this size travel inside the JSON frame; larger ones are streamed in chunks.
INLINE_BODY_LIMIT = 64 * 1024
# Chunk payload size for streamed bodies: well under the 1 MiB that WebSocket servers
# and channel layers accept per message by default.
DEFAULT_CHUNK_SIZE = 256 * 1024
# Chunks of one stream that may be in flight unacknowledged (4 MiB at the default size).
DEFAULT_STREAM_WINDOW = 16

# Reasons carried by ``bye`` frames.
BYE_SUPERSEDED = "superseded"
BYE_UNAUTHORIZED = "unauthorized"
BYE_REVOKED = "token_revoked"
BYE_UNSUPPORTED = "unsupported_protocol"
BYE_SHUTDOWN = "shutdown"
BYE_DISCONNECTED = "disconnected_by_admin"
BYE_SUSPENDED = "suspended"
BYE_BAD_HELLO = "bad_hello"
# A child edge's batch job is about to reach its walltime (or was cancelled): it will not come back.
BYE_ALLOCATION_ENDED = "allocation_ended"

# Close codes (4000-4999 are free for applications).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_SUPERSEDED = 4000
CLOSE_UNAUTHORIZED = 4001
CLOSE_UNSUPPORTED = 4002
CLOSE_BAD_HELLO = 4003
CLOSE_DISCONNECTED = 4004
CLOSE_HEARTBEAT = 4008

_STR = (str,)
_INT = (int,)
_DICT = (dict,)
_LIST = (list,)

# Required fields and their types, per frame type. Optional fields are checked where used.
_REQUIRED: dict[str, dict[str, tuple[type, ...]]] = {
    HELLO: {"protocol": _INT, "agent_version": _STR, "host": _DICT, "plugins": _LIST},
    WELCOME: {"protocol": _INT, "edge": _STR, "session_id": _STR, "limits": _DICT},
    REQUEST: {"req_id": _STR, "method": _STR, "plugin": _STR, "path": _STR},
    RESPONSE: {"req_id": _STR, "status": _INT},
    CANCEL: {"req_id": _STR},
    EVENT: {"plugin": _STR, "topic": _STR},
    PING: {},
    PONG: {},
    ERROR: {"error": _STR},
    BYE: {"reason": _STR},
    CREDIT: {"req_id": _STR, "chunks": _INT},
}

MAX_REQ_ID_LEN = 64


class ProtocolError(ValueError):
    """A frame that cannot be handled. ``code`` is a short machine-readable reason."""

    def __init__(self, code: str, detail: str, req_id: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.req_id = req_id

    def to_frame(self) -> dict[str, Any]:
        return error_frame(self.code, self.detail, req_id=self.req_id)


def encode(frame: dict[str, Any]) -> str:
    """Serialize one frame to the JSON text sent on the socket."""
    if orjson is not None:
        try:
            return orjson.dumps(frame).decode("utf-8")
        except TypeError:
            pass  # e.g. an int beyond 64 bits or a non-str key: let json handle or reject it
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | bytes) -> Any:
    if orjson is not None:
        return orjson.loads(text)
    return json.loads(text)


def decode(text: str | bytes) -> dict[str, Any]:
    """Parse and validate one text frame.

    Raises :class:`ProtocolError` for bad JSON, a non-object, an unknown type, or a missing
    or mistyped required field. Never raises anything else for any input.
    """
    try:
        frame = _loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"frame is not valid JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError("bad_frame", "frame must be a JSON object")
    ftype = frame.get("type")
    if not isinstance(ftype, str):
        raise ProtocolError("bad_frame", "frame has no string 'type'")
    required = _REQUIRED.get(ftype)
    if required is None:
        raise ProtocolError("unknown_type", f"unknown frame type {ftype[:40]!r}")
    req_id = frame.get("req_id")
    if not isinstance(req_id, str) or len(req_id) > MAX_REQ_ID_LEN:
        req_id = None
    for field, types in required.items():
        value = frame.get(field)
        # bool is an int subclass; a status or version of True is a bug, not a number.
        if not isinstance(value, types) or (types is _INT and isinstance(value, bool)):
            raise ProtocolError(
                "bad_frame", f"'{ftype}' frame needs field '{field}' of type {types[0].__name__}", req_id
            )
    if "req_id" in required and len(frame["req_id"]) > MAX_REQ_ID_LEN:
        raise ProtocolError("bad_frame", "req_id too long")
    return frame


def error_frame(code: str, detail: str, *, req_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": ERROR, "error": code, "detail": detail}
    if req_id:
        frame["req_id"] = req_id
    return frame


def credit_frame(req_id: str, chunks: int) -> dict[str, Any]:
    return {"type": CREDIT, "req_id": req_id, "chunks": chunks}


def bye_frame(reason: str, detail: str = "", *, retry: bool = True) -> dict[str, Any]:
    """``retry`` tells the agent whether reconnecting can help (False for bad tokens)."""
    return {"type": BYE, "reason": reason, "detail": detail, "retry": retry}


# --- bodies -------------------------------------------------------------------------------


def put_body(frame: dict[str, Any], body: bytes, *, inline_limit: int = INLINE_BODY_LIMIT) -> bool:
    """Attach ``body`` to ``frame`` inline if it is small; return True if it must be streamed.

    Small UTF-8 bodies go in ``body`` (text), small binary ones in ``body_b64``; anything
    larger than ``inline_limit`` is marked ``stream: true`` with its ``length`` and the
    caller sends it with :func:`iter_chunks`.
    """
    if not body:
        return False
    if len(body) > inline_limit:
        frame["stream"] = True
        frame["length"] = len(body)
        return True
    try:
        frame["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        frame["body_b64"] = base64.b64encode(body).decode("ascii")
    return False


def get_body(frame: dict[str, Any]) -> bytes:
    """Return the inline body of a frame (b"" if none). Raises ProtocolError if malformed."""
    body = frame.get("body")
    if body is not None:
        if not isinstance(body, str):
            raise ProtocolError("bad_frame", "'body' must be a string", frame.get("req_id"))
        return body.encode("utf-8")
    b64 = frame.get("body_b64")
    if b64 is not None:
        if not isinstance(b64, str):
            raise ProtocolError("bad_frame", "'body_b64' must be a string", frame.get("req_id"))
        try:
            return base64.b64decode(b64, validate=True)
        except ValueError:
            raise ProtocolError("bad_frame", "'body_b64' is not valid base64", frame.get("req_id")) from None
    return b""


# --- binary chunk frames ------------------------------------------------------------------
#
# Layout: 1 byte flags | 1 byte len(req_id) | req_id (ASCII) | 4 bytes seq (big endian) | data

FLAG_LAST = 0x01
_SEQ = struct.Struct("!I")


def pack_chunk(req_id: str, seq: int, data: bytes, *, last: bool) -> bytes:
    rid = req_id.encode("ascii")
    return b"".join(
        (bytes((FLAG_LAST if last else 0, len(rid))), rid, _SEQ.pack(seq), data)
    )


def unpack_chunk(buf: bytes) -> tuple[str, int, bool, bytes]:
    """Split a binary frame into (req_id, seq, last, data). Raises ProtocolError if malformed."""
    if len(buf) < 2:
        raise ProtocolError("bad_chunk", "binary frame too short")
    flags, rid_len = buf[0], buf[1]
    head = 2 + rid_len + 4
    if rid_len == 0 or len(buf) < head:
        raise ProtocolError("bad_chunk", "binary frame header truncated")
    try:
        req_id = buf[2 : 2 + rid_len].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("bad_chunk", "binary frame req_id is not ASCII") from None
    (seq,) = _SEQ.unpack_from(buf, 2 + rid_len)
    return req_id, seq, bool(flags & FLAG_LAST), bytes(buf[head:])


def iter_chunks(body: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE):
    """Yield (seq, piece, last) over ``body``; an empty body yields one empty last chunk."""
    view = memoryview(body)
    total = len(body)
    if total == 0:
        yield 0, b"", True
        return
    for seq, start in enumerate(range(0, total, chunk_size)):
        end = min(start + chunk_size, total)
        yield seq, view[start:end], end >= total
