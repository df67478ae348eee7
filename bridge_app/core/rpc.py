"""The per-process reply inbox: how answers from edges find their waiting callers.

A request may land on any bridge process while its edge's socket lives in another. The
caller's process therefore sends the request to the edge's channel with ``reply_to`` set
to its own inbox channel, and waits on a future keyed by ``req_id``. One inbox exists
per process and event loop (one channel from ``new_channel()``, one pump task), never one
channel per request: on the Redis pub/sub layer that would leak a subscription per call.

The inbox also joins the broadcast group, so the same pump applies cache invalidations
and fails the calls of edges whose connection has gone (``bridge.edge_down``). It does
nothing else: the per-process chores and the process registry live in the runtime
(``runtime.py``), which ``on_start`` and ``on_stop`` tell when an inbox starts and stops.

Messages the inbox receives:

* ``rpc.response`` {req_id, status, headers, body | stream}: the head of an answer;
* ``rpc.chunk`` {req_id, seq, data, last}: a piece of a streamed answer body;
* ``rpc.error`` {req_id, status, error, detail}: the call failed on the way;
* ``rpc.credit`` {req_id, chunks}: the agent may take this many more upload chunks;
* ``bridge.invalidate`` {kind, key}; ``bridge.edge_down`` {channel_name, detail}.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable
from typing import Any, Callable

from channels.layers import get_channel_layer

from edge_agent.backoff import backoff_delay

from .. import messages
from ..calls.errors import AppError
from ..messages import BROADCAST_GROUP
from ..observability import metrics
from . import local
from .directory import directory

log = logging.getLogger(__name__)



# The request never reached the agent (its connection had closed, or was gone, when the
# request arrived): safe to send again to where the edge is connected now. Never answered
# to a caller as such; the proxy retries, or answers 503 edge_offline.
EDGE_MOVED = "edge_moved"
# How long an edge channel reported down is remembered, to refuse further sends to it.
DOWN_CHANNEL_MEMORY = 120.0


class CallFailed(AppError):
    """A proxied call that ended without an answer from the plugin."""


class Call:
    """One request waiting for its answer: a head future plus, for streamed bodies, an
    ordered queue of chunks (chunks may arrive out of order, or before the head)."""

    __slots__ = ("_credit_event", "_early", "_next_seq", "chunks", "credits", "edge_channel", "head", "req_id")

    def __init__(self, req_id: str, edge_channel: str, loop: asyncio.AbstractEventLoop) -> None:
        self.req_id = req_id
        self.edge_channel = edge_channel
        self.head: asyncio.Future = loop.create_future()
        self.chunks: asyncio.Queue | None = None
        self._next_seq = 0
        self._early: dict[int, tuple[bytes, bool]] = {}
        # Upload flow control: chunks we may still send before the agent grants more.
        self.credits = 0
        self._credit_event: asyncio.Event | None = None

    def grant(self, chunks: int) -> None:
        self.credits += chunks
        if self._credit_event is not None:
            self._credit_event.set()

    async def wait_credit(self) -> None:
        """Wait until the agent grants more upload chunks or the call ends (answered early,
        or failed); callers check ``head.done()`` afterwards."""
        while self.credits <= 0 and not self.head.done():
            if self._credit_event is None:
                self._credit_event = asyncio.Event()
            self._credit_event.clear()
            waiter = asyncio.ensure_future(self._credit_event.wait())
            try:
                await asyncio.wait({waiter, self.head}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    def fail(self, status: int, error: str, detail: str) -> None:
        exc = CallFailed(status, error, detail)
        if not self.head.done():
            self.head.set_exception(exc)
        elif self.chunks is not None:
            self.chunks.put_nowait(exc)

    def add_chunk(self, seq: int, data: bytes, last: bool) -> None:
        if self.chunks is None:
            self.chunks = asyncio.Queue()
        self._early[seq] = (data, last)
        while self._next_seq in self._early:
            piece = self._early.pop(self._next_seq)
            self._next_seq += 1
            self.chunks.put_nowait(piece)

    async def body_chunks(self):
        """Yield the streamed body in order; raises CallFailed if the edge goes away."""
        if self.chunks is None:
            self.chunks = asyncio.Queue()
        while True:
            item = await self.chunks.get()
            if isinstance(item, CallFailed):
                raise item
            data, last = item
            if data:
                yield data
            if last:
                return


class Inbox:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str = ""
        self.calls: dict[str, Call] = {}
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task] = []
        # Edge channels whose connection has ended (bridge.edge_down), with when: a request
        # sent there now would wait for the timeout, as nobody reads them any more.
        self.down_channels: dict[str, float] = {}

    async def start(self) -> None:
        try:
            self.channel = await self.layer.new_channel(messages.INBOX_PREFIX)
            await self.layer.group_add(BROADCAST_GROUP, self.channel)
            local.register(self.channel, self._dispatch)
        except BaseException as exc:
            self.ready.set_exception(exc)
            self.ready.exception()
            raise
        self._tasks.append(asyncio.create_task(self._pump(), name="bridge-inbox"))
        for hook in on_start:
            hook(self)
        self.ready.set_result(True)

    async def stop(self) -> None:
        local.unregister(self.channel)
        for stopping in on_stop:
            await stopping(self)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for call in list(self.calls.values()):
            call.fail(503, "bridge_shutdown", "the bridge is shutting down")
        self.calls.clear()
        try:
            await self.layer.group_discard(BROADCAST_GROUP, self.channel)
        except Exception:
            pass

    async def refresh_membership(self) -> None:
        """Join the broadcast group again (the Redis core layer expires memberships)."""
        await self.layer.group_add(BROADCAST_GROUP, self.channel)

    def open(self, req_id: str, edge_channel: str) -> Call:
        call = Call(req_id, edge_channel, asyncio.get_running_loop())
        self.calls[req_id] = call
        metrics.tally(metrics.INFLIGHT)
        return call

    def channel_down(self, channel: str) -> bool:
        """Whether ``channel``'s edge connection is known to have ended."""
        return channel in self.down_channels

    def forget_down_channels(self) -> None:
        """Forget channels reported down more than DOWN_CHANNEL_MEMORY seconds ago (a
        housekeeping chore of the runtime)."""
        horizon = time.monotonic() - DOWN_CHANNEL_MEMORY
        for channel in [c for c, when in self.down_channels.items() if when < horizon]:
            del self.down_channels[channel]

    def close(self, req_id: str) -> None:
        if self.calls.pop(req_id, None) is not None:
            metrics.tally(metrics.INFLIGHT, -1)

    async def _pump(self) -> None:
        failures = 0
        while True:
            try:
                message = await self.layer.receive(self.channel)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The layer is unreachable (Redis restarting): keep trying, quietly backing off.
                delay = backoff_delay(failures, base=0.1, cap=5.0)
                failures += 1
                log.warning("reply inbox cannot receive: %s; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                self._dispatch(message)
            except Exception:
                log.exception("reply inbox could not handle %s", message.get("type"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        mtype = message.get("type")
        if mtype == messages.RPC_CHUNK:
            call = self.calls.get(message.get("req_id", ""))
            if call is not None:
                call.add_chunk(message["seq"], message["data"], message["last"])
        elif mtype == messages.RPC_RESPONSE:
            call = self.calls.get(message.get("req_id", ""))
            if call is not None and not call.head.done():
                call.head.set_result(message)
        elif mtype == messages.RPC_CREDIT:
            call = self.calls.get(message.get("req_id", ""))
            if call is not None:
                call.grant(message.get("chunks", 0))
        elif mtype == messages.RPC_ERROR:
            call = self.calls.get(message.get("req_id", ""))
            if call is not None:
                call.fail(message.get("status", 502), message.get("error", "edge_error"), message.get("detail", ""))
        elif mtype == messages.INVALIDATE:
            directory.invalidate(message.get("kind", ""), message.get("key"), reload=True)
        elif mtype == messages.EDGE_DOWN:
            channel = message.get("channel_name")
            if channel:
                self.down_channels[channel] = time.monotonic()
            # Requests the agent had been sent fail; the others never reached it (they were
            # in the channel when the connection ended) and are sent again where it is now.
            delivered = set(message.get("delivered") or ())
            detail = message.get("detail") or "the edge disconnected"
            self.fail_calls(502, "edge_disconnected", detail,
                            where=lambda c: c.edge_channel == channel and c.req_id in delivered)
            self.fail_calls(503, EDGE_MOVED, detail, where=lambda c: c.edge_channel == channel)
        # Anything else is a late or unknown message: dropped without keeping state.

    def fail_calls(self, status: int, error: str, detail: str, *, where=None) -> int:
        """Fail the pending calls matching ``where(call)`` (all if None); returns how many."""
        doomed = [c for c in self.calls.values() if where is None or where(c)]
        for call in doomed:
            call.fail(status, error, detail)
        return len(doomed)

_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Inbox] = weakref.WeakKeyDictionary()
# Told when an inbox has started (before anyone waiting for it goes on), and awaited when
# it stops: the runtime starts and stops the process's chores and registry with it
# (connected by ``BridgeAppConfig.ready``).
on_start: list[Callable[[Inbox], None]] = []
on_stop: list[Callable[[Inbox], Awaitable[None]]] = []


# The last inbox that started, with its loop: checked first, as a WeakKeyDictionary lookup
# makes a weak reference (get_inbox runs once per proxied call).
_current: tuple[asyncio.AbstractEventLoop, Inbox] | None = None


async def get_inbox() -> Inbox:
    """The inbox of the running event loop, started on first use."""
    global _current
    loop = asyncio.get_running_loop()
    current = _current
    if current is not None and current[0] is loop:
        return current[1]
    inbox = _inboxes.get(loop)
    if inbox is None:
        inbox = Inbox(get_channel_layer())
        _inboxes[loop] = inbox
        try:
            await inbox.start()
        except BaseException:
            _inboxes.pop(loop, None)
            raise
        return inbox
    if not inbox.ready.done():
        await asyncio.shield(inbox.ready)
    if inbox.ready.exception() is None and _inboxes.get(loop) is inbox:
        _current = (loop, inbox)
    return inbox


def get_inbox_if_started() -> Inbox | None:
    """The running event loop's inbox, without starting one."""
    return _inboxes.get(asyncio.get_running_loop())


async def stop_inbox() -> None:
    global _current
    loop = asyncio.get_running_loop()
    _current = None
    inbox = _inboxes.pop(loop, None)
    if inbox is not None:
        await inbox.stop()
