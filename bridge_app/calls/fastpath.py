"""The shortest way in for the most frequent request: a proxied call with an API token.

``asgi.py`` stacks several ASGI layers in front of the proxy (the process runtime, the
protocol router, the shutdown marker, MCP, the original SDK's credentials, event streams),
each an extra coroutine and a look at the request per call; together they were about 5%
of the bridge's CPU per proxied call (docs/BENCHMARKS.md, "Where the time goes"). None of
them does anything to a request that :func:`direct` accepts: a proxy path that is no MCP
metadata path, with ``Authorization: Bearer`` (the compatibility layer only rewrites
Basic), while the process is not shutting down (which adds ``Connection: close``). Those
go straight to the proxy; everything else takes the full stack, unchanged.
"""

from __future__ import annotations

from ..core import shutdown
from ..core.runtime import started_here
from ..mcp.app import METADATA_PATHS
from .proxy import ProxyTarget, parse_target


def direct(scope: dict) -> ProxyTarget | None:
    """The call's target if the layers in front of the proxy would all pass ``scope`` on
    untouched, else None."""
    if scope["type"] != "http" or shutdown.in_progress():
        return None
    path = scope["path"]
    if path in METADATA_PATHS:
        return None
    target = parse_target(path)
    if target is None:
        return None
    for key, value in scope["headers"]:
        if key == b"authorization":
            return target if value[:7].lower() == b"bearer " else None
    return None


class FastPath:
    """ASGI: :func:`direct` requests to ``proxy``, the rest to ``app`` (the full stack, with
    the runtime's start in front: a process's first calls take it until the runtime runs)."""

    def __init__(self, app, proxy) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope, receive, send) -> None:
        target = direct(scope)
        if target is not None and started_here():
            return await self.proxy.serve(scope, receive, send, target)
        return await self.app(scope, receive, send)
