"""``EdgeConsumer``: the bridge's end of an agent's WebSocket at ``/register``.

Life of a connection:

1. The agent connects with ``Authorization: Bearer <edge token>``. The socket is always
   accepted, so that a refusal can say why in a ``bye`` frame the agent prints (a bare
   HTTP 403 carries no reason through most WebSocket clients).
2. The agent sends ``hello``; an unsupported protocol version, a name that is not the
   token's, or a suspended edge is refused with ``bye`` and a close code. An original
   (RADICAL Edge 0.0.x) agent, which sends ``register`` instead, is told in an ``error``
   frame it logs what it needs, and held off a minute before the close (``compat.py``).
3. The edge is marked online at this consumer's channel; a previous connection of the same
   edge is told to go away (``edge.superseded``); the agent gets ``welcome``.
4. From then on two loops run side by side: one forwards socket frames (responses,
   chunks, events, pings) to the channel layer, the other forwards channel-layer
   messages (requests, chunks, cancels, kicks) to the socket. Neither awaits an answer
   while handling a message; that would deadlock a consumer.
5. On disconnect, exactly this edge's requests in flight fail at once, and the edge goes
   offline unless a newer connection has replaced this one.

This consumer deliberately bypasses ``AsyncConsumer.dispatch``: the stock dispatch
closes stale DB connections in a thread before every message, a thread hop per proxied
call. Database work here happens only at connect, heartbeat and disconnect, each wrapped
in ``database_sync_to_async`` (which does that cleanup itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from edge_agent import protocol

from .. import messages
from ..access.tokens import bearer_from_header
from ..calls.compat import OLD_AGENT_CLOSE_REASON, old_agent_refusal
from ..conf import edge_settings
from ..core import collector, local, shutdown
from ..core.broadcast import abroadcast, invalidation
from ..core.processes import EDGE_CHANNEL_PREFIX
from ..core.rpc import EDGE_MOVED
from ..domain import children, services
from ..observability import metrics
from ..streams import events
from .hello import HelloRefused, hello_validate
from .registrar import get_registrar

log = logging.getLogger(__name__)

# Live consumers of this process, only so that a graceful shutdown can say bye to them.
_live: set[EdgeConsumer] = set()


@dataclass(frozen=True)
class EdgeIdentity:
    edge_id: int
    name: str
    token_id: int


class OldAgent(Exception):
    """The first frame was an original (0.0.x) agent's ``register``."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(frame["detail"])
        self.frame = frame


class Refusal(Exception):
    def __init__(self, reason: str, detail: str, code: int, retry: bool = False) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.code, self.retry = reason, detail, code, retry


_REFUSAL_CODES = {
    protocol.BYE_UNAUTHORIZED: protocol.CLOSE_UNAUTHORIZED,
    protocol.BYE_REVOKED: protocol.CLOSE_UNAUTHORIZED,
    protocol.BYE_SUSPENDED: protocol.CLOSE_DISCONNECTED,
    protocol.BYE_BAD_HELLO: protocol.CLOSE_BAD_HELLO,
}


class EdgeConsumer(AsyncConsumer):
    """One agent connection. See the module docstring for its life cycle."""

    async def __call__(self, scope: dict, receive, send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.channel_layer = get_channel_layer()
        self.channel_name = ""
        # None only until _register succeeds; every method that reads it runs after that.
        self.identity: EdgeIdentity = None  # type: ignore[assignment]
        self.session_id = ""
        self.inflight: dict[str, str] = {}  # req_id -> reply_to
        self.closed = False
        self.last_heard = time.monotonic()
        self._touching = False
        self._last_touch = 0.0
        self._drain_task: asyncio.Task | None = None
        self._superseded = False  # a newer connection of this edge has registered
        # Registration runs in its own frame so that the hello, headers and model
        # instances it needs are freed before the connection's long life begins.
        if not await self._register():
            return
        _live.add(self)
        try:
            await self._run()
        finally:
            _live.discard(self)
            metrics.EDGES_CONNECTED.dec()
            await self._cleanup()
            collector.collect_soon()  # the connection's objects are garbage now

    async def _register(self) -> bool:
        """Accept, authenticate, register and welcome; False if the agent was refused."""
        first = await self._receive()
        if first["type"] != "websocket.connect":
            return False
        token = bearer_from_header(dict(self.scope.get("headers") or []).get(b"authorization"))
        await self._send({"type": "websocket.accept"})
        self.channel_name = await self.channel_layer.new_channel(EDGE_CHANNEL_PREFIX)
        try:
            hello = await self._await_hello()
            self._check_protocol(hello)
            refused_ui = self._check_hello(hello)
            if shutdown.in_progress():
                # Reached through a proxy's kept-alive connection: register elsewhere, not
                # here just before this process exits.
                raise Refusal(protocol.BYE_SHUTDOWN, "this bridge process is shutting down; reconnect to another",
                              protocol.CLOSE_GOING_AWAY, retry=True)
            try:
                result = await get_registrar().register(token=token, channel_name=self.channel_name, hello=hello)
            except services.EdgeRefused as exc:
                raise Refusal(exc.reason, exc.detail, _REFUSAL_CODES.get(exc.reason, protocol.CLOSE_UNAUTHORIZED)) \
                    from None
        except OldAgent as old:
            await self._refuse_old_agent(old.frame)
            return False
        except Refusal as refusal:
            log.info("edge connection refused: %s: %s", refusal.reason, refusal.detail)
            await self._close(protocol.bye_frame(refusal.reason, refusal.detail, retry=refusal.retry), refusal.code)
            return False
        except _Disconnected:
            return False
        self.identity = EdgeIdentity(result.edge.pk, result.edge.name, result.token_id)
        self.session_id = result.session_id
        # Welcome first: from the registration on, calls are routed to this channel, and a
        # request delivered in-process before the welcome made the agent refuse the
        # connection ("expected welcome, got 'request'") and those calls were lost.
        await self._send_frame({
            "type": protocol.WELCOME,
            "protocol": protocol.PROTOCOL_VERSION,
            "edge": self.identity.name,
            "session_id": self.session_id,
            "limits": {
                "max_body": edge_settings.MAX_BODY_BYTES,
                "heartbeat": edge_settings.HEARTBEAT_INTERVAL,
                "request_timeout": edge_settings.REQUEST_TIMEOUT,
                "chunk_size": edge_settings.CHUNK_SIZE,
                "stream_window": edge_settings.STREAM_WINDOW,
            },
        })
        for reason in refused_ui:
            log.warning("edge %s: %s", self.identity.name, reason)
            await self._send_frame(protocol.error_frame("ui_schema_refused", reason))
        local.register(self.channel_name, self._deliver_local)
        await abroadcast(invalidation("edge", self.identity.name))
        if result.replaced_channel and result.replaced_channel != self.channel_name:
            await self._layer_send(result.replaced_channel, messages.edge_superseded())
        log.info("edge %s connected", self.identity.name, extra={"edge": self.identity.name, "host": result.edge.host,
                                          "agent_version": result.edge.agent_version})
        await events.topology_changed(self.identity.name, online=True)
        metrics.EDGES_CONNECTED.inc()
        return True

    # -- handshake -----------------------------------------------------------------------

    async def _await_hello(self) -> dict[str, Any]:
        try:
            message = await asyncio.wait_for(self._receive(), timeout=edge_settings.HELLO_TIMEOUT)
        except asyncio.TimeoutError:
            raise Refusal(protocol.BYE_BAD_HELLO, "no hello within "
                          f"{edge_settings.HELLO_TIMEOUT:.0f}s", protocol.CLOSE_BAD_HELLO, retry=True) from None
        if message["type"] == "websocket.disconnect":
            raise _Disconnected()
        text = message.get("text")
        if text is None:
            raise Refusal(protocol.BYE_BAD_HELLO, "the first frame must be a JSON hello", protocol.CLOSE_BAD_HELLO)
        old = old_agent_refusal(text)
        if old is not None:
            raise OldAgent(old)
        try:
            frame = protocol.decode(text)
        except protocol.ProtocolError as exc:
            # An old agent's hello may lack fields this version needs: say so plainly.
            raise Refusal(protocol.BYE_BAD_HELLO, f"bad hello: {exc.detail}", protocol.CLOSE_BAD_HELLO) from None
        if frame["type"] != protocol.HELLO:
            raise Refusal(protocol.BYE_BAD_HELLO, f"expected hello, got {frame['type']}", protocol.CLOSE_BAD_HELLO)
        return frame

    async def _refuse_old_agent(self, frame: dict[str, Any]) -> None:
        """Tell an original (0.0.x) agent what it needs, hold its socket a while so that it
        cannot reconnect at once, then close it (bridge_app/calls/compat.py)."""
        peer = (self.scope.get("client") or ["?"])[0]
        log.warning("refused an old RADICAL Edge agent from %s: %s", peer, frame["detail"])
        await self._send_frame(frame)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + edge_settings.OLD_AGENT_HOLD
        while (remaining := deadline - loop.time()) > 0:
            try:
                message = await asyncio.wait_for(self._receive(), timeout=remaining)
            except asyncio.TimeoutError:
                break
            if message["type"] == "websocket.disconnect":
                self.closed = True
                return  # it read the frame and stopped, as the original does
        self.closed = True
        try:
            await self._send({"type": "websocket.close", "code": protocol.CLOSE_UNSUPPORTED,
                              "reason": OLD_AGENT_CLOSE_REASON})
        except Exception:
            pass

    def _check_protocol(self, hello: dict[str, Any]) -> None:
        version = hello["protocol"]
        if version not in protocol.SUPPORTED_VERSIONS:
            raise Refusal(
                protocol.BYE_UNSUPPORTED,
                f"agent speaks protocol {version}; this bridge speaks "
                f"{', '.join(map(str, sorted(protocol.SUPPORTED_VERSIONS)))}: upgrade radical-edge-agent",
                protocol.CLOSE_UNSUPPORTED,
            )

    def _check_hello(self, hello: dict[str, Any]) -> list[str]:
        """Refuse what no page may show or database store (bridge_app/agents/hello.py); returns
        the reasons for the plugins' UI schemas it refused, to tell the agent."""
        try:
            return hello_validate(hello)
        except HelloRefused as exc:
            raise Refusal(protocol.BYE_BAD_HELLO, f"bad hello: {exc.detail}", protocol.CLOSE_BAD_HELLO) from None

    # -- main loops ----------------------------------------------------------------------

    async def _run(self) -> None:
        # One extra task per edge (the channel loop) and a timer for the watchdog: with
        # thousands of edges connected, every task and frame counts in bridge memory.
        loop = asyncio.get_running_loop()
        channel_task = loop.create_task(self._channel_loop())
        self._watchdog_handle = loop.call_later(edge_settings.HEARTBEAT_INTERVAL / 2, self._watchdog)
        try:
            # Ends on websocket.disconnect, which also follows every close we send.
            await self._socket_loop()
        finally:
            self._watchdog_handle.cancel()
            channel_task.cancel()
            await asyncio.gather(channel_task, return_exceptions=True)

    async def _socket_loop(self) -> None:
        while True:
            message = await self._receive()
            mtype = message["type"]
            if mtype == "websocket.receive":
                self.last_heard = time.monotonic()
                text = message.get("text")
                if text is not None:
                    await self._on_text(text)
                elif message.get("bytes") is not None:
                    await self._on_bytes(message["bytes"])
            elif mtype == "websocket.disconnect":
                self.closed = True
                return

    async def _channel_loop(self) -> None:
        """Forward channel-layer messages to the socket; after a handler returns False
        (the connection is being closed) the socket loop ends by itself."""
        while not self.closed:
            try:
                message = await self.channel_layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("edge channel receive failed: %s", exc, extra={"edge": self.identity.name})
                await asyncio.sleep(0.5)
                continue
            handler = self._layer_handlers.get(message.get("type"))
            if handler is None:
                log.warning("unknown channel message %r", message.get("type"))
                continue
            if await handler(self, message) is False:
                return

    def _deliver_local(self, message: dict[str, Any]):
        """Same-process delivery (local.py): run the message's handler in the sender's task."""
        handler = self._layer_handlers.get(message.get("type"))
        if handler is None:
            log.warning("unknown channel message %r", message.get("type"))
            return None
        return handler(self, message)

    def _watchdog(self) -> None:
        interval = edge_settings.HEARTBEAT_INTERVAL
        silent = time.monotonic() - self.last_heard
        loop = asyncio.get_running_loop()
        if silent > 3 * interval:
            log.warning("edge silent for %.0fs; closing", silent, extra={"edge": self.identity.name})
            self._closing = loop.create_task(self._close(None, protocol.CLOSE_HEARTBEAT))
            return
        self._watchdog_handle = loop.call_later(interval / 2, self._watchdog)

    # -- frames from the agent -----------------------------------------------------------

    async def _on_text(self, text: str) -> None:
        old = old_agent_refusal(text)
        if old is not None:
            raise OldAgent(old)
        try:
            frame = protocol.decode(text)
        except protocol.ProtocolError as exc:
            log.warning("bad frame from edge: %s", exc.detail, extra={"edge": self.identity.name})
            metrics.PROTOCOL_ERRORS.inc()
            await self._send_frame(exc.to_frame())
            return
        ftype = frame["type"]
        metrics.tally(metrics.child(metrics.FRAMES, "in", ftype))
        if ftype == protocol.RESPONSE:
            await self._on_response(frame)
        elif ftype == protocol.EVENT:
            await events.event_received(self.identity.name, frame)
            children.child_job_event(self.identity.name, frame)
        elif ftype == protocol.CREDIT:
            reply_to = self.inflight.get(frame["req_id"])
            if reply_to is not None:
                await self._layer_send(reply_to, messages.rpc_credit(frame["req_id"], frame["chunks"]))
        elif ftype == protocol.PING:
            await self._send_frame({"type": protocol.PONG, "ts": frame.get("ts")})
            self._heartbeat()
        elif ftype == protocol.PONG:
            self._heartbeat()
        elif ftype == protocol.ERROR:
            log.warning("edge reported an error: %s: %s", frame["error"], frame.get("detail", ""),
                        extra={"edge": self.identity.name, "req_id": frame.get("req_id")})
        elif ftype == protocol.BYE:
            log.info("edge %s said bye: %s", self.identity.name, frame["reason"], extra={"edge": self.identity.name})
            if frame["reason"] == protocol.BYE_ALLOCATION_ENDED:
                await database_sync_to_async(children.child_edge_ended_by_agent)(edge_id=self.identity.edge_id)
            await self._close(None, protocol.CLOSE_NORMAL)
        else:
            await self._send_frame(protocol.error_frame(
                "unexpected_type", f"the bridge does not accept '{ftype}' frames from agents"))

    async def _on_response(self, frame: dict[str, Any]) -> None:
        req_id = frame["req_id"]
        reply_to = self.inflight.get(req_id)
        if reply_to is None:
            # Late (timed out, cancelled) or bogus: drop it without keeping any state.
            log.debug("response for unknown request %s dropped", req_id)
            return
        try:
            body = protocol.get_body(frame)
        except protocol.ProtocolError as exc:
            del self.inflight[req_id]
            await self._send_frame(exc.to_frame())
            await self._layer_send(reply_to, messages.rpc_error(req_id, 502, "bad_response", exc.detail))
            return
        stream = bool(frame.get("stream"))
        if not stream:
            del self.inflight[req_id]
        headers = frame.get("headers")
        await self._layer_send(reply_to, messages.rpc_response(
            req_id, frame["status"], headers if isinstance(headers, dict) else {}, body, stream, frame.get("length")))

    async def _on_bytes(self, data: bytes) -> None:
        try:
            req_id, seq, last, payload = protocol.unpack_chunk(data)
        except protocol.ProtocolError as exc:
            metrics.PROTOCOL_ERRORS.inc()
            await self._send_frame(exc.to_frame())
            return
        metrics.tally(metrics.child(metrics.FRAMES, "in", "chunk"))
        reply_to = self.inflight.get(req_id)
        if reply_to is None:
            return
        if last:
            del self.inflight[req_id]
        await self._layer_send(reply_to, messages.rpc_chunk(req_id, seq, payload, last))

    def _heartbeat(self) -> None:
        # Write last_seen at most twice per interval, in the background, batched with the
        # other connections' heartbeats (_Heartbeats).
        now = time.monotonic()
        if self._touching or now - self._last_touch < edge_settings.HEARTBEAT_INTERVAL / 2:
            return
        self._touching = True
        self._last_touch = now
        _heartbeats.add(self)

    async def _touched(self, state: str) -> None:
        """The heartbeat write's verdict on this connection (services.edge_touch)."""
        self._touching = False
        if state != "ok" and not self.closed:
            log.info("closing connection: %s", state, extra={"edge": self.identity.name})
            await self._close(*_TOUCH_REFUSALS[state])

    # -- messages from the channel layer -------------------------------------------------

    async def _edge_request(self, message: dict[str, Any]) -> None:
        req_id, reply_to = message["req_id"], message["reply_to"]
        if self.closed:
            # Not sent to the agent: the caller's process sends it again where the edge is
            # connected now (a drained connection's edge has usually reconnected already).
            await self._layer_send(reply_to, messages.rpc_error(req_id, 503, EDGE_MOVED,
                                                                f"edge '{self.identity.name}' disconnected"))
            return
        if len(self.inflight) >= edge_settings.EDGE_MAX_INFLIGHT:
            await self._layer_send(reply_to, messages.rpc_error(
                req_id, 429, "edge_busy",
                f"edge '{self.identity.name}' has {len(self.inflight)} requests in flight; retry shortly"))
            return
        self.inflight[req_id] = reply_to
        metrics.tally(metrics.child(metrics.FRAMES, "out", "request"))
        # If the socket went away under this very request, its caller learns it now, not
        # at the timeout (the soak found calls waiting 60 s for an agent killed mid-send).
        if not await self._send_frame_text(message["frame"]) and self.inflight.pop(req_id, None) is not None:
            await self._layer_send(reply_to, messages.rpc_error(req_id, 502, "edge_disconnected",
                                                                f"edge '{self.identity.name}' disconnected"))

    async def _edge_request_chunk(self, message: dict[str, Any]) -> None:
        if message["req_id"] in self.inflight:
            await self._send_bytes(protocol.pack_chunk(message["req_id"], message["seq"], message["data"],
                                                       last=message["last"]))

    async def _edge_cancel(self, message: dict[str, Any]) -> None:
        if self.inflight.pop(message["req_id"], None) is not None:
            await self._send_frame({"type": protocol.CANCEL, "req_id": message["req_id"],
                                    "reason": message.get("reason", "cancelled")})

    async def _edge_credit(self, message: dict[str, Any]) -> None:
        # Credits for a download may arrive after its last chunk left: harmless, dropped.
        if message["req_id"] in self.inflight:
            await self._send_frame(protocol.credit_frame(message["req_id"], message["chunks"]))

    async def _edge_superseded(self, message: dict[str, Any]) -> bool:
        # Calls still in flight here are answered before the socket closes (a restarting
        # agent's old connection, or a bridge process draining at shutdown).
        self._superseded = True
        self.drain(protocol.bye_frame(protocol.BYE_SUPERSEDED, "a newer connection of this edge took over"),
                   protocol.CLOSE_SUPERSEDED)
        return True

    async def _edge_kick(self, message: dict[str, Any]) -> bool:
        token_id = message.get("token_id")
        if token_id is not None and token_id != self.identity.token_id:
            return True  # another token of this edge was revoked; this connection stays
        await self._close(protocol.bye_frame(message.get("reason", protocol.BYE_DISCONNECTED),
                                             message.get("detail", ""), retry=message.get("retry", True)),
                          protocol.CLOSE_DISCONNECTED)
        return False

    _layer_handlers: dict[Any, Any] = {
        messages.EDGE_REQUEST: _edge_request,
        messages.EDGE_REQUEST_CHUNK: _edge_request_chunk,
        messages.EDGE_CANCEL: _edge_cancel,
        messages.EDGE_CREDIT: _edge_credit,
        messages.EDGE_SUPERSEDED: _edge_superseded,
        messages.EDGE_KICK: _edge_kick,
    }

    # -- plumbing ------------------------------------------------------------------------

    async def _send_frame(self, frame: dict[str, Any]) -> bool:
        metrics.tally(metrics.child(metrics.FRAMES, "out", frame["type"]))
        return await self._send_frame_text(protocol.encode(frame))

    async def _send_frame_text(self, text: str) -> bool:
        if self.closed:
            return False
        try:
            await self._send({"type": "websocket.send", "text": text})
            return True
        except Exception:  # the socket went away under us
            self.closed = True
            return False

    async def _send_bytes(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            await self._send({"type": "websocket.send", "bytes": data})
        except Exception:
            self.closed = True

    async def _layer_send(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await local.send(self.channel_layer, channel, message)
        except Exception as exc:
            log.warning("channel send to %s failed: %s", channel, exc)

    async def _close(self, bye: dict[str, Any] | None, code: int) -> None:
        if self.closed:
            return
        if bye is not None:
            await self._send_frame(bye)
        self.closed = True
        try:
            await self._send({"type": "websocket.close", "code": code})
        except Exception:
            pass

    async def _cleanup(self) -> None:
        local.unregister(self.channel_name)
        self.closed = True
        pending, self.inflight = self.inflight, {}
        for req_id, reply_to in pending.items():
            await self._layer_send(reply_to, messages.rpc_error(
                req_id, 502, "edge_disconnected", f"edge '{self.identity.name}' disconnected before answering"))
        # Other processes may still be sending to this channel: tell them it is gone, and
        # which requests the agent had been sent (the others are sent again elsewhere).
        await abroadcast(messages.edge_down(self.channel_name, f"edge '{self.identity.name}' disconnected",
                                            delivered=list(pending)))
        try:
            went_offline = await database_sync_to_async(services.edge_disconnect)(
                edge_id=self.identity.edge_id, session_id=self.session_id)
        except Exception:
            log.exception("could not record the disconnect of %s", self.identity.name)
            went_offline = False
        if went_offline:
            await abroadcast(invalidation("edge", self.identity.name))
            await events.topology_changed(self.identity.name, online=False)
        log.info("edge %s disconnected", self.identity.name, extra={"edge": self.identity.name})

    def drain(self, bye: dict[str, Any], code: int, *, handoff: bool = False) -> asyncio.Task:
        """Say ``bye`` now, keep forwarding answers to the calls in flight, and close once
        they are all answered (or after DRAIN_TIMEOUT). Calls that arrive meanwhile are
        still forwarded: the agent keeps reading a draining connection. With ``handoff``,
        also wait until the agent's new connection (to another process) has taken over."""
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self._drain(bye, code, handoff))
        return self._drain_task

    async def _drain(self, bye: dict[str, Any], code: int, handoff: bool) -> None:
        await self._send_frame(bye)
        deadline = time.monotonic() + edge_settings.DRAIN_TIMEOUT
        # Until the new connection has registered, every process still routes the edge's
        # calls to this one; closing in a moment when none was in flight failed the calls
        # that came next (502) or lost them (504 after the timeout) under steady traffic.
        while ((self.inflight or (handoff and not self._superseded)) and not self.closed
               and time.monotonic() < deadline):
            await asyncio.sleep(0.05)
        await self._close(None, code)


class _Disconnected(Exception):
    pass


class _Heartbeats:
    """The heartbeat writes of every connection of this process, batched: the first one
    waits TOUCH_GATHER seconds for others, then they are written together, three queries per
    256 (``services.edges_touch``), in one thread hop. With 10,000 edges pinging every 20 s
    that is a few batches a second instead of 500 thread hops and 1,500 queries."""

    def __init__(self) -> None:
        self.pending: dict[EdgeConsumer, None] = {}
        self.task: asyncio.Task | None = None

    def add(self, consumer: EdgeConsumer) -> None:
        self.pending[consumer] = None
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._run(), name="edge-heartbeats")

    async def _run(self) -> None:
        await asyncio.sleep(TOUCH_GATHER)
        while self.pending:
            batch = list(self.pending)[:TOUCH_BATCH]
            for consumer in batch:
                del self.pending[consumer]
            try:
                states = await database_sync_to_async(services.edges_touch)(
                    touches=[(c.identity.edge_id, c.session_id, c.identity.token_id) for c in batch])
            except Exception:
                log.warning("heartbeat write failed for %d edge(s)", len(batch), exc_info=True)
                states = ["ok"] * len(batch)  # tried again at their next ping
            for consumer, state in zip(batch, states):
                try:
                    await consumer._touched(state)
                except Exception:
                    log.warning("heartbeat verdict failed", exc_info=True, extra={"edge": consumer.identity.name})


# Seconds the first heartbeat of a batch waits for others, and most connections per batch.
TOUCH_GATHER = 0.05
TOUCH_BATCH = 1024
_heartbeats = _Heartbeats()


_TOUCH_REFUSALS = {
    "superseded": (protocol.bye_frame(protocol.BYE_SUPERSEDED, "a newer connection took over"),
                   protocol.CLOSE_SUPERSEDED),
    "revoked": (protocol.bye_frame(protocol.BYE_REVOKED, "this edge's token was revoked or expired", retry=False),
                protocol.CLOSE_UNAUTHORIZED),
    "suspended": (protocol.bye_frame(protocol.BYE_SUSPENDED, "this edge was suspended", retry=False),
                  protocol.CLOSE_DISCONNECTED),
}


async def shutdown_all(detail: str = "bridge process shutting down") -> int:
    """Graceful shutdown: tell every edge connected to this process to reconnect (to
    another process behind the load balancer) and wait until the calls in flight on their
    old connections are answered. Returns how many edges were told. Agents that connect
    from now on are refused with the same ``bye``."""
    shutdown.begin()
    consumers = list(_live)
    # Wait for each agent's new connection only if there is another process for it to go to.
    handoff = shutdown.others_alive()
    drains = [c.drain(protocol.bye_frame(protocol.BYE_SHUTDOWN, detail, retry=True), protocol.CLOSE_GOING_AWAY,
                      handoff=handoff)
              for c in consumers]
    if drains:
        await asyncio.gather(*drains, return_exceptions=True)
    return len(consumers)
