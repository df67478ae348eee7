"""``radical-edge-bridge``: run the bridge under an ASGI server with sensible flags.

    radical-edge-bridge --host 0.0.0.0 --port 8000 [--workers N] [--server uvicorn|daphne]

uvicorn (with uvloop and httptools) is the default: it measured fastest (docs/BENCHMARKS.md).
TLS is served directly when ``RADICAL_BRIDGE_CERT`` and ``RADICAL_BRIDGE_KEY`` point to a
certificate and key. Several workers need a shared channel layer (``REDIS_URL``).
"""

from __future__ import annotations

import argparse
import os
import sys

from radical_edge_site.env import env_bool, env_int

APP = "radical_edge_site.asgi:application"
# WebSocket messages: chunks are 256 KiB; hello frames with many plugin schemas can be
# larger. Bodies above this travel in chunks, so a few MiB is plenty.
WS_MAX_MESSAGE = 8 * 1024 * 1024
# At shutdown, how long kept-alive HTTP connections (a proxy's) may take to go away by
# themselves: above nginx's upstream keepalive_timeout (deploy/nginx/radical-edge.conf).
KEEPALIVE_GRACE = 5.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="radical-edge-bridge", description="Run the Radical Edge bridge.")
    p.add_argument("--host", default=os.environ.get("RADICAL_BRIDGE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=env_int("RADICAL_BRIDGE_PORT", 8000))
    p.add_argument("--workers", type=int, default=env_int("RADICAL_BRIDGE_WORKERS", 1),
                   help="worker processes (more than one needs REDIS_URL)")
    p.add_argument("--server", choices=["uvicorn", "daphne"],
                   default=os.environ.get("RADICAL_BRIDGE_SERVER", "uvicorn"))
    p.add_argument("--log-level", default=os.environ.get("RADICAL_SERVER_LOG_LEVEL", "warning"),
                   help="ASGI server log level (the bridge's own logs use RADICAL_LOG_LEVEL)")
    p.add_argument("--proxy-headers", action="store_true",
                   default=env_bool("RADICAL_BEHIND_TLS_PROXY"),
                   help="trust X-Forwarded-For/Proto from the load balancer")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radical_edge_site.settings")
    if args.workers > 1 and not os.environ.get("REDIS_URL"):
        print("error: --workers > 1 needs REDIS_URL (processes must share a channel layer)", file=sys.stderr)
        return 2
    cert, key = os.environ.get("RADICAL_BRIDGE_CERT"), os.environ.get("RADICAL_BRIDGE_KEY")
    if bool(cert) != bool(key):
        print("error: set both RADICAL_BRIDGE_CERT and RADICAL_BRIDGE_KEY, or neither", file=sys.stderr)
        return 2
    if args.server == "daphne":
        return _daphne(args, cert, key)
    import uvicorn

    config = uvicorn.Config(
        APP,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="auto",
        http=_http_protocol(),
        ws="websockets-sansio",
        ws_max_size=WS_MAX_MESSAGE,
        ws_ping_interval=None,  # liveness is the protocol's own ping/pong
        ws_per_message_deflate=False,
        lifespan="on",
        log_level=args.log_level,
        access_log=False,
        server_header=False,  # no "server: uvicorn" (names our software to scanners; one header less per answer)
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=os.environ.get("RADICAL_FORWARDED_ALLOW_IPS", "127.0.0.1"),
        ssl_certfile=cert,
        ssl_keyfile=key,
        timeout_graceful_shutdown=10,
    )
    server_class = _bridge_server_class()
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess, multiprocess

        # Workers build their servers from this module-level name: make them ours too.
        multiprocess.Server = server_class
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    server = server_class(config=config)
    server.run()
    return 0 if server.started else 3


def _http_protocol():
    """httptools with a deadline for request heads (radical_edge_site/protocols.py), or
    uvicorn's choice where httptools is missing."""
    try:
        from radical_edge_site.protocols import BridgeHttpProtocol
    except ImportError:
        return "auto"
    return BridgeHttpProtocol


def _bridge_server_class():
    import asyncio
    import logging
    import time

    import uvicorn

    class BridgeServer(uvicorn.Server):
        """uvicorn, with a graceful drain first on SIGTERM: stop accepting, tell every
        edge connected here to reconnect elsewhere and let the calls in flight on their
        old connections finish; only then uvicorn's own shutdown (which closes sockets)."""

        async def shutdown(self, sockets=None) -> None:
            from bridge_app.core import shutdown

            for server in self.servers:
                server.close()
            shutdown.begin()  # from now on, every answer says Connection: close
            try:
                from bridge_app.core.runtime import runtime_drain

                # Event streams end and edges drain now, instead of holding uvicorn's wait
                # for open requests until its timeout; the lifespan stops the rest after it.
                await runtime_drain()
            except Exception:
                logging.getLogger("radical_edge_site").exception("graceful shutdown failed")
            # A proxy's kept-alive connections: each is closed after its next answer, or by
            # the proxy when idle (nginx's keepalive_timeout, 4 s in deploy/nginx/). Closing
            # them here instead could race a request being sent on one. Only worth waiting
            # for when another process is there to take the traffic.
            deadline = time.monotonic() + (KEEPALIVE_GRACE if shutdown.others_alive() else 0)
            while time.monotonic() < deadline and any(
                    not type(c).__module__.startswith("uvicorn.protocols.websockets")
                    for c in self.server_state.connections):
                await asyncio.sleep(0.1)
            try:
                from bridge_app.streams.sse import streams_shutdown

                streams_shutdown()  # any stream that started meanwhile
            except Exception:
                logging.getLogger("radical_edge_site").exception("ending event streams failed")
            await super().shutdown(sockets)

    return BridgeServer


def _daphne(args: argparse.Namespace, cert: str | None, key: str | None) -> int:
    if args.workers > 1:
        print("error: daphne runs one process; start several behind a load balancer", file=sys.stderr)
        return 2
    from daphne.cli import CommandLineInterface

    endpoint = (f"ssl:port={args.port}:interface={args.host}:privateKey={key}:certKey={cert}" if cert
                else f"tcp:port={args.port}:interface={args.host}")
    argv = ["-e", endpoint, "--websocket_timeout", "-1", "--websocket-max-message-size", str(WS_MAX_MESSAGE),
            "--ping-interval", "86400", "--application-close-timeout", "10", "-v", "0"]
    if args.proxy_headers:
        argv.append("--proxy-headers")
    CommandLineInterface().run([*argv, APP])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
