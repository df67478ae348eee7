"""ASGI lifespan: start per-process machinery, and shut down gracefully.

On shutdown (SIGTERM to uvicorn), every edge connected to this process gets ``bye``
(reason ``shutdown``) so its agent reconnects, to another process behind the load
balancer, at once; calls still waiting in this process fail with 503.
"""

from __future__ import annotations

import logging

from .audit import audit_flush
from .consumers import shutdown_all
from .events import events_flush
from .rpc import get_inbox, stop_inbox

log = logging.getLogger(__name__)


class Lifespan:
    async def __call__(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await get_inbox()  # subscribe to invalidations before serving
                except Exception as exc:
                    # Redis may be restarting; the first proxied call retries.
                    log.warning("channel layer not reachable at startup: %s", exc)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    count = await shutdown_all()
                    if count:
                        log.info("told %d edge(s) to reconnect elsewhere", count)
                    await stop_inbox()
                    try:
                        await audit_flush()  # calls recorded since the last periodic write
                    except Exception:
                        log.warning("could not write the last audit records", exc_info=True)
                    # Events since the last batch (edges that just left, their last notifications).
                    await events_flush()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return
