"""The agent's connection loop: dial out to the bridge, serve requests, reconnect.

One :class:`EdgeService` keeps one WebSocket to the bridge's ``/register`` endpoint:

* it authenticates with the edge token in the ``Authorization`` header, sends ``hello`` and
  waits for ``welcome`` (or a ``bye`` that says why it was refused);
* every ``request`` runs in its own task, so a slow call never holds up another;
* it sends ``ping`` every heartbeat interval and drops a connection that stays silent
  for three intervals;
* it drains the plugin host's event queue into ``event`` frames;
* after any failure it reconnects with exponential backoff and full jitter; after a
  permanent refusal (bad or revoked token) it waits much longer instead of spinning;
* :meth:`stop` (wired to SIGTERM/SIGINT) says ``bye`` and closes cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from . import __version__, protocol
from .backoff import Backoff
from .coalesce import CoalescingTransport
from .host import PluginHost, host_facts
from .plugin import Caller, HTTPError, Request, Response

log = logging.getLogger("edge_agent.service")

# Largest WebSocket message accepted from the bridge: bodies arrive in chunks of 256 KiB,
# so only a very large hello/welcome or chunk setting could come near this.
MAX_FRAME = 8 * 1024 * 1024
# How long the old connection of a handoff may take to answer its calls in flight.
DRAIN_TIMEOUT = 30.0
ROUTES = {"direct": ("direct",), "relay": ("relay",), "auto": ("direct", "relay")}


class Refused(Exception):
    """The bridge refused this agent (``bye`` during the handshake)."""

    def __init__(self, reason: str, detail: str, retry: bool) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry = retry


def register_url(url: str) -> str:
    """Turn ``https://bridge.example`` (or ws/wss, with or without a path) into the
    ``wss://bridge.example/register`` URL the agent dials."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"bridge URL must be http(s):// or ws(s)://, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/register"):
        path += "/register"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def make_ssl_context(*, ca_cert: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """TLS is verified against the system store (or ``ca_cert``) unless ``insecure``."""
    ctx = ssl.create_default_context(cafile=ca_cert)
    if insecure:
        log.warning(
            "TLS VERIFICATION IS DISABLED (--insecure): anyone on the network path can "
            "impersonate the bridge and run commands through this edge"
        )
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class EdgeService:
    """Keeps the agent connected to its bridge and serves plugin requests."""

    def __init__(
        self,
        *,
        url: str,
        token: str,
        host: PluginHost,
        name: str | None = None,
        ca_cert: str | None = None,
        insecure: bool = False,
        max_body: int = 64 * 1024 * 1024,
        open_timeout: float = 10.0,
        backoff: Backoff | None = None,
        refusal_delay: float = 300.0,
        exit_on_refusal: bool = False,
        connectivity: str = "direct",
        relay_file: str | None = None,
    ) -> None:
        self.url = register_url(url)
        self.token = token
        self.host = host
        self.name = name
        self.max_body = max_body
        self.open_timeout = open_timeout
        self.backoff = backoff or Backoff()
        self.refusal_delay = refusal_delay
        # A child edge in a batch job: a revoked token means its allocation is over.
        self.exit_on_refusal = exit_on_refusal
        # How to reach the bridge: "direct", through the parent edge's "relay" (an HTTP
        # CONNECT proxy named in relay_file, edge_agent/relay.py), or "auto": direct first,
        # the relay after a connection failure, and back again after one through the relay.
        if connectivity not in ROUTES:
            raise ValueError(f"connectivity must be one of {', '.join(ROUTES)}, not {connectivity!r}")
        if connectivity != "direct" and not relay_file:
            raise ValueError(f"connectivity {connectivity} needs a relay file (--relay-file)")
        self.routes = ROUTES[connectivity]
        self.relay_file = relay_file
        self.route = self.routes[0]
        self.ssl = make_ssl_context(ca_cert=ca_cert, insecure=insecure) if self.url.startswith("wss:") else None
        # Set from the bridge's welcome.
        self.edge_name: str | None = None
        self.session_id: str | None = None
        self.heartbeat = 20.0
        self.chunk_size = protocol.DEFAULT_CHUNK_SIZE
        self.stream_window = protocol.DEFAULT_STREAM_WINDOW
        self.connected = asyncio.Event()
        self.connections = 0
        self._stopping = asyncio.Event()
        self._stop_reason = protocol.BYE_SHUTDOWN
        self._ws: ClientConnection | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._uploads: dict[str, _Upload] = {}
        self._credits: dict[str, _Credits] = {}
        self._draining: set[asyncio.Task] = set()
        self._handoff = False

    # -- public --------------------------------------------------------------------------

    def stop(self, reason: str = protocol.BYE_SHUTDOWN) -> None:
        """Ask the service to say ``bye`` and return from :meth:`run`."""
        self._stop_reason = reason
        self._stopping.set()

    async def run(self) -> None:
        """Connect and serve until :meth:`stop`; reconnects after every failure."""
        await self.host.start()
        try:
            while not self._stopping.is_set():
                delay = await self._run_once()
                if self._stopping.is_set():
                    break
                log.info("reconnecting in %.1fs", delay)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in [*self._tasks.values(), *self._draining]:
                task.cancel()
            await self.host.stop()

    # -- one connection ------------------------------------------------------------------

    async def _run_once(self) -> float:
        """Run one connection; return how long to wait before the next attempt."""
        headers = {"Authorization": f"Bearer {self.token}"}
        ws: ClientConnection | None = None
        handoff = False
        slow = False
        route_kwargs: dict[str, Any] = {}
        if self.route == "relay":
            try:
                # Read at each attempt: a restarted parent may have moved its relay.
                text = await asyncio.to_thread(Path(self.relay_file or "").read_text)
                route_kwargs["proxy"] = text.strip()
            except OSError as exc:
                log.warning("cannot read the relay file %s: %s", self.relay_file, exc)
                self._next_route()
                return self.backoff.next_delay()
        opened = False
        try:
            ws = await connect(
                self.url,
                **route_kwargs,
                additional_headers=headers,
                user_agent_header=f"radical-edge-agent/{__version__}",
                ssl=self.ssl,
                open_timeout=self.open_timeout,
                ping_interval=None,  # liveness is the protocol's own ping/pong
                max_size=MAX_FRAME,  # bodies travel in chunks, so frames stay small
                compression=None,
                close_timeout=2,
            )
            # Answers written in one pass of the loop leave in one system call.
            ws.transport = CoalescingTransport(ws.transport)  # type: ignore[assignment]  # a Transport in all but name
            self._ws = ws
            opened = True
            await self._handshake(ws)
            self.backoff.reset()  # the outage is over
            self.connections += 1
            self.connected.set()
            log.info("connected to %s as edge %r%s", self.url, self.edge_name,
                     " through the parent's relay" if self.route == "relay" else "")
            handoff = await self._serve(ws)
        except Refused as exc:
            if exc.retry:
                log.warning("bridge refused the connection: %s (%s)", exc.reason, exc.detail)
                return self.backoff.next_delay()
            if self.exit_on_refusal:
                log.error("bridge refused this agent: %s: %s; exiting", exc.reason, exc.detail)
                self._stopping.set()
                return 0.0
            log.error(
                "bridge refused this agent: %s: %s; retrying in %.0fs (fix the token or the "
                "agent, then restart it)", exc.reason, exc.detail, self.refusal_delay,
            )
            return self.refusal_delay
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
            log.warning("connection to %s%s failed: %s", self.url, " through the relay" if self.route == "relay"
                        else "", _describe(exc))
            if isinstance(exc, ssl.SSLCertVerificationError):
                slow = True
            if not opened:
                self._next_route()
        finally:
            self._ws = None
            self.connected.clear()
            if ws is not None:
                if handoff:
                    # The bridge process is shutting down: answer what is in flight on the
                    # old socket while the next connection goes to another process.
                    task = asyncio.create_task(self._drain(ws))
                    self._draining.add(task)
                    task.add_done_callback(self._draining.discard)
                else:
                    self._uploads.clear()
                    await ws.close()
        return self.backoff.next_delay(fast=not slow)

    def _next_route(self) -> None:
        """After a connection that could not be opened: try the other route (auto)."""
        if len(self.routes) > 1:
            self.route = self.routes[(self.routes.index(self.route) + 1) % len(self.routes)]
            log.info("next attempt: %s", "through the parent's relay" if self.route == "relay" else "direct")

    async def _drain(self, ws: ClientConnection) -> None:
        try:
            await asyncio.wait_for(self._read(ws, draining=True), DRAIN_TIMEOUT)
        except (asyncio.TimeoutError, websockets.WebSocketException, Refused, OSError):
            pass
        finally:
            await ws.close()

    async def _handshake(self, ws: ClientConnection) -> None:
        hello = {
            "type": protocol.HELLO,
            "protocol": protocol.PROTOCOL_VERSION,
            "agent_version": __version__,
            "host": {**host_facts(), "connectivity": self.route},
            "plugins": self.host.manifest(),
        }
        if self.name:
            hello["name"] = self.name
        await ws.send(protocol.encode(hello))
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=self.open_timeout)
        except websockets.ConnectionClosed as exc:
            raise Refused("closed", f"bridge closed the connection during the handshake ({exc})", True) from None
        try:
            frame = protocol.decode(raw) if isinstance(raw, str) else {}
        except protocol.ProtocolError as exc:
            raise Refused("bad_welcome", exc.detail, True) from None
        if frame.get("type") == protocol.BYE:
            raise Refused(frame["reason"], str(frame.get("detail", "")), bool(frame.get("retry", True)))
        if frame.get("type") != protocol.WELCOME:
            raise Refused("bad_welcome", f"expected welcome, got {frame.get('type')!r}", True)
        self.edge_name = frame["edge"]
        self.session_id = frame["session_id"]
        limits = frame["limits"]
        self.heartbeat = float(limits.get("heartbeat", self.heartbeat))
        self.chunk_size = int(limits.get("chunk_size", self.chunk_size))
        self.stream_window = max(2, int(limits.get("stream_window", self.stream_window)))
        self.max_body = min(self.max_body, int(limits.get("max_body", self.max_body)))

    async def _serve(self, ws: ClientConnection) -> bool:
        """Serve one connection until it ends; True if the bridge handed us off (shutdown)."""
        self._last_heard = time.monotonic()
        self._handoff = False
        workers = [
            asyncio.create_task(self._read(ws), name="reader"),
            asyncio.create_task(self._heartbeat(ws), name="heartbeat"),
            asyncio.create_task(self._send_events(ws), name="events"),
            asyncio.create_task(self._stopping.wait(), name="stop"),
        ]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
            # The reader's outcome says why the connection ended (a bye with a refusal
            # beats a send that failed because the bridge then closed the socket).
            for task in sorted(done, key=lambda t: t.get_name() != "reader"):
                if task.get_name() != "stop" and not task.cancelled():
                    error = task.exception()
                    if error is not None:
                        raise error
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        if self._stopping.is_set():
            try:
                await ws.send(protocol.encode(protocol.bye_frame(self._stop_reason, "agent stopping")))
                await ws.close(protocol.CLOSE_NORMAL, self._stop_reason)
            except websockets.ConnectionClosed:
                pass
            return False
        return self._handoff

    async def _read(self, ws: ClientConnection, *, draining: bool = False) -> None:
        async for raw in ws:
            self._last_heard = time.monotonic()
            if isinstance(raw, bytes):
                await self._on_chunk(ws, raw)
                continue
            try:
                frame = protocol.decode(raw)
            except protocol.ProtocolError as exc:
                log.warning("bad frame from bridge: %s", exc.detail)
                await ws.send(protocol.encode(exc.to_frame()))
                continue
            ftype = frame["type"]
            if ftype == protocol.REQUEST:
                await self._on_request(ws, frame)
            elif ftype == protocol.CANCEL:
                self._on_cancel(frame["req_id"])
            elif ftype == protocol.CREDIT:
                credits = self._credits.get(frame["req_id"])
                if credits is not None:
                    credits.grant(frame["chunks"])
            elif ftype == protocol.PING:
                await ws.send(protocol.encode({"type": protocol.PONG, "ts": frame.get("ts")}))
            elif ftype == protocol.PONG:
                pass
            elif ftype == protocol.BYE:
                if draining:
                    continue  # the old connection of a handoff: keep answering until closed
                reason, detail = frame["reason"], str(frame.get("detail", ""))
                log.warning("bridge said bye: %s %s", reason, detail)
                if reason == protocol.BYE_SUPERSEDED:
                    # Only another agent with this edge's token can replace our live
                    # connection; stepping back for a while stops the two from fighting.
                    raise Refused(reason, "another agent connected as this edge", False)
                if not frame.get("retry", True):
                    raise Refused(reason, detail, False)
                self._handoff = reason == protocol.BYE_SHUTDOWN
                return
            elif ftype == protocol.ERROR:
                log.warning("bridge reported an error: %s %s", frame["error"], frame.get("detail", ""))
            else:
                await ws.send(protocol.encode(protocol.error_frame(
                    "unexpected_type", f"agents do not accept '{ftype}' frames")))

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if time.monotonic() - self._last_heard > 3 * self.heartbeat:
                log.warning("bridge silent for %.0fs; reconnecting", time.monotonic() - self._last_heard)
                await ws.close(protocol.CLOSE_HEARTBEAT, "heartbeat timeout")
                return
            await ws.send(protocol.encode({"type": protocol.PING, "ts": time.time()}))

    async def _send_events(self, ws: ClientConnection) -> None:
        while True:
            await self.host.wait_events()
            batch = self.host.take_events()
            sent = 0
            try:
                for event in batch:
                    await ws.send(protocol.encode(event))
                    sent += 1
            except BaseException:
                self.host.requeue_events(batch[sent:])
                raise

    # -- requests ------------------------------------------------------------------------

    async def _on_request(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        req_id = frame["req_id"]
        if frame.get("stream"):
            length = frame.get("length")  # None: a chunked upload of unknown size
            if length is not None and (not isinstance(length, int) or length < 0 or length > self.max_body):
                await self._send_response(ws, req_id, HTTPError(
                    413, "payload_too_large", f"body of {length} bytes exceeds this edge's limit of {self.max_body}",
                ).to_response())
                return
            self._uploads[req_id] = _Upload(frame, length)
            return
        try:
            body = protocol.get_body(frame)
        except protocol.ProtocolError as exc:
            await ws.send(protocol.encode(exc.to_frame()))
            await self._send_response(ws, req_id, HTTPError(400, "bad_frame", exc.detail).to_response())
            return
        self._start(ws, frame, body)

    async def _on_chunk(self, ws: ClientConnection, raw: bytes) -> None:
        try:
            req_id, seq, last, data = protocol.unpack_chunk(raw)
        except protocol.ProtocolError as exc:
            await ws.send(protocol.encode(exc.to_frame()))
            return
        upload = self._uploads.get(req_id)
        if upload is None:
            return  # a cancelled or refused upload: drop its remaining chunks
        limit = upload.length if upload.length is not None else self.max_body
        if seq != upload.next_seq or upload.size + len(data) > limit:
            del self._uploads[req_id]
            error = (HTTPError(413, "payload_too_large", f"body exceeds this edge's limit of {self.max_body} bytes")
                     if upload.length is None and seq == upload.next_seq else
                     HTTPError(400, "bad_upload", f"chunk {seq} out of order or body longer than announced"))
            await self._send_response(ws, req_id, error.to_response())
            return
        upload.parts.append(data)
        upload.size += len(data)
        upload.next_seq += 1
        # Grant the bridge more chunks as they arrive: half a window at a time.
        half = self.stream_window // 2
        if not last and upload.next_seq % half == 0:
            await ws.send(protocol.encode(protocol.credit_frame(req_id, half)))
        if last:
            del self._uploads[req_id]
            if upload.length is not None and upload.size != upload.length:
                await self._send_response(ws, req_id, HTTPError(
                    400, "bad_upload", f"body has {upload.size} bytes, {upload.length} announced").to_response())
                return
            # One copy into the body (appending to a bytearray and converting it cost three).
            self._start(ws, upload.frame, b"".join(upload.parts))

    def _start(self, ws: ClientConnection, frame: dict[str, Any], body: bytes) -> None:
        req_id = frame["req_id"]
        headers = frame.get("headers")
        request = Request(
            method=frame["method"].upper(),
            path=frame["path"],
            query=frame.get("query") or "",
            headers=headers if isinstance(headers, dict) else {},
            body=body,
            caller=Caller.from_frame(frame.get("caller")),
            req_id=req_id,
        )
        task = asyncio.create_task(self._handle(ws, frame["plugin"], request))
        self._tasks[req_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(req_id, None))

    async def _handle(self, ws: ClientConnection, plugin: str, request: Request) -> None:
        response = await self.host.dispatch(plugin, request)
        try:
            await self._send_response(ws, request.req_id, response)
        except websockets.ConnectionClosed:
            log.info("connection closed before the answer to %s could be sent", request.req_id)

    async def _send_response(self, ws: ClientConnection, req_id: str, response: Response) -> None:
        frame: dict[str, Any] = {
            "type": protocol.RESPONSE,
            "req_id": req_id,
            "status": response.status,
            "headers": response.headers,
        }
        if response.stream is not None:
            await self._send_stream(ws, frame, response)
            return
        if not protocol.put_body(frame, response.body):
            await ws.send(protocol.encode(frame))
            return
        await ws.send(protocol.encode(frame))
        credits = self._credits[req_id] = _Credits(self.stream_window)
        try:
            for seq, piece, last in protocol.iter_chunks(response.body, self.chunk_size):
                await credits.acquire()  # the bridge grants more as its client reads
                await ws.send(protocol.pack_chunk(req_id, seq, piece, last=last))
        finally:
            self._credits.pop(req_id, None)

    async def _send_stream(self, ws: ClientConnection, frame: dict[str, Any], response: Response) -> None:
        """Send a body produced piece by piece, in chunks of ``chunk_size`` under the same
        credit-based flow control as whole bodies. If the producer fails midway the body is
        ended early: with a declared length the client sees it truncated."""
        req_id = frame["req_id"]
        frame["stream"] = True
        if response.length is not None:
            frame["length"] = response.length
        source = response.stream
        assert source is not None
        await ws.send(protocol.encode(frame))
        credits = self._credits[req_id] = _Credits(self.stream_window)
        seq = 0
        buf = bytearray()
        size = self.chunk_size

        async def send(piece: bytes, last: bool) -> None:
            nonlocal seq
            await credits.acquire()
            await ws.send(protocol.pack_chunk(req_id, seq, piece, last=last))
            seq += 1

        try:
            try:
                async for piece in source:
                    if buf:
                        buf += piece
                        piece = bytes(buf)
                        buf.clear()
                    view, pos = memoryview(piece), 0
                    while len(view) - pos >= size:
                        await send(view[pos:pos + size], False)
                        pos += size
                    buf += view[pos:]
            except asyncio.CancelledError:
                raise
            except websockets.ConnectionClosed:
                raise
            except Exception:
                log.exception("streamed answer to %s failed midway", req_id)
            await send(bytes(buf), True)
        finally:
            self._credits.pop(req_id, None)
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.debug("closing the stream of %s failed", req_id, exc_info=True)

    def _on_cancel(self, req_id: str) -> None:
        self._uploads.pop(req_id, None)
        task = self._tasks.pop(req_id, None)
        if task is not None:
            task.cancel()
            log.info("request %s cancelled by the bridge", req_id)


class _Credits:
    """How many more chunks of one stream may be sent."""

    def __init__(self, initial: int) -> None:
        self.available = initial
        self._event = asyncio.Event()

    def grant(self, n: int) -> None:
        if n > 0:
            self.available += n
            self._event.set()

    async def acquire(self) -> None:
        while self.available <= 0:
            self._event.clear()
            await self._event.wait()
        self.available -= 1


@dataclass
class _Upload:
    frame: dict[str, Any]
    length: int | None
    next_seq: int = 0

    def __post_init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, websockets.InvalidStatus):
        return f"HTTP {exc.response.status_code} from the bridge"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS error: the bridge's certificate is not trusted ({exc.verify_message or exc}); "
                "if the bridge uses a site CA, pass --ca-cert FILE (never --insecure in production)")
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
