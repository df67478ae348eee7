"""The limits: what ``…/sysinfo/version`` returns, answered with no proxy.

``app`` is a bare FastAPI app; ``raw`` is a raw ASGI callable (no framework at all), the
most the server itself can do, and the reference of issue 21's targets.
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/{edge}/sysinfo/version")
async def version(edge: str) -> dict:
    return {"plugin": "sysinfo", "version": "1.0.0"}


_BODY = b'{"plugin":"sysinfo","version":"1.0.0"}'
_START = {"type": "http.response.start", "status": 200,
          "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]}
_RESPONSE = {"type": "http.response.body", "body": _BODY}


async def raw(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(_START)
    await send(_RESPONSE)
