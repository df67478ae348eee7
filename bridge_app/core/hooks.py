"""Where the bridge's optional parts plug in, without the parts they plug into importing
them (or being imported by them): the proxy's observers, guards and answer gates, and the
per-process chores the runtime runs.

Each part installs itself here from ``BridgeAppConfig.ready()`` (``metrics.install``,
``throttling.install``, ``audit.install``; ``collector.install`` from ``asgi.py``). The
proxy and the runtime read these lists; nothing here imports either of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# Called with each finished call's ``proxy.CallInfo`` (audit trail, metrics). Must not block.
call_observers: list[Callable[[Any], None]] = []
# Called before a call is forwarded, with (principal, edge entry, target, role); a guard
# refuses by raising ProxyError (rate limits). May return an awaitable.
call_guards: list[Callable[..., Awaitable[None] | None]] = []
# Awaited with each call's CallInfo (status known) before its answer is sent; a gate
# refuses by raising ProxyError, which is answered instead (strict audit mode).
answer_gates: list[Callable[[Any], Awaitable[None]]] = []
# Run every ``runtime.HOUSEKEEPING_INTERVAL`` seconds in every bridge process.
chores: list[Callable[[], Awaitable[object]]] = []


def register_chore(chore: Callable[[], Awaitable[object]]) -> None:
    """Run ``chore`` every HOUSEKEEPING_INTERVAL seconds in every bridge process."""
    if chore not in chores:
        chores.append(chore)
