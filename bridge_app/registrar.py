"""Batching of agent registrations: one database transaction for every registration that
arrives while the previous batch is being written.

When a bridge process restarts, every edge it served reconnects within a second or two.
Registering them one by one costs a few ORM round trips each, all funnelled through the
single database thread; batching turns a thousand registrations into a few batches of a
handful of queries (``services.edges_register``). No artificial delay is added: a lone
registration is written at once, and only arrivals during a write wait for the next one.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from channels.db import database_sync_to_async

from . import services

MAX_BATCH = 500


class Registrar:
    def __init__(self) -> None:
        self.pending: list[tuple[services.RegisterRequest, asyncio.Future]] = []
        self.flushing = False
        self._task: asyncio.Task | None = None

    async def register(self, *, token: str | None, channel_name: str, hello: dict[str, Any]) -> services.ConnectResult:
        """Register one connection; raises services.EdgeRefused if it may not connect."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((services.RegisterRequest(token, channel_name, hello), future))
        if not self.flushing:
            self.flushing = True
            self._task = loop.create_task(self._flush())
        result = await future
        if isinstance(result, services.EdgeRefused):
            raise result
        return result

    async def _flush(self) -> None:
        try:
            while self.pending:
                await asyncio.sleep(0)  # let registrations of this loop iteration join the batch
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                try:
                    results = await database_sync_to_async(services.edges_register)(
                        requests=[request for request, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.flushing = False


_registrars: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Registrar] = weakref.WeakKeyDictionary()


def get_registrar() -> Registrar:
    loop = asyncio.get_running_loop()
    registrar = _registrars.get(loop)
    if registrar is None:
        registrar = _registrars[loop] = Registrar()
    return registrar
