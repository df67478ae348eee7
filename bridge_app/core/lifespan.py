"""ASGI lifespan (uvicorn): start the per-process runtime, and stop it gracefully on
shutdown (``runtime.py``, which daphne, without lifespan, reaches another way)."""

from __future__ import annotations

from .runtime import runtime_start, runtime_stop


class Lifespan:
    async def __call__(self, scope, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await runtime_start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await runtime_stop()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return
