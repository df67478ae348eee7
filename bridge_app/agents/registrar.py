"""Batching of agent registrations: one database transaction for every registration that
arrives while the previous batch is being written.

When a bridge process restarts, every edge it served reconnects within a second or two.
Registering them one by one costs a few ORM round trips each, all funnelled through the
single database thread; batching turns a thousand registrations into a few batches of a
handful of queries (``services.edges_register``). No artificial delay is added: a lone
registration is written at once, and only arrivals during a write wait for the next one.

A batch is one transaction, so one registration the database refuses would fail all the
others with it. ``hello.hello_validate`` keeps such hellos out, and should anything get past
it, a batch that fails for a reason in its rows is written again one registration at a time:
only the registration that fails alone fails.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError

from edge_agent import protocol

from ..domain import services

log = logging.getLogger(__name__)

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
                requests = [request for request, _ in batch]
                try:
                    results = await database_sync_to_async(services.edges_register)(requests=requests)
                except (OperationalError, InterfaceError) as exc:
                    # The database is away: every registration would fail alike.
                    results = [exc] * len(batch)
                except Exception as exc:
                    log.warning("a batch of %d registrations failed (%s); registering them one by one",
                                len(batch), exc)
                    results = await database_sync_to_async(_register_each)(requests)
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, Exception) and not isinstance(result, services.EdgeRefused):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.flushing = False


def _register_each(requests: list[services.RegisterRequest]) -> list[Any]:
    """Each registration in its own transaction: its result, a refusal (``bad_hello``) if
    the database refuses what it announced, or the exception if the database is away."""
    results: list[Any] = []
    for request in requests:
        try:
            results.append(services.edges_register(requests=[request])[0])
        except (OperationalError, InterfaceError) as exc:
            results.append(exc)
        except Exception as exc:
            log.error("the database refused a registration: %s", exc)
            results.append(services.EdgeRefused(protocol.BYE_BAD_HELLO,
                                                f"the bridge could not store this hello ({type(exc).__name__})"))
    return results


_registrars: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Registrar] = weakref.WeakKeyDictionary()


def get_registrar() -> Registrar:
    loop = asyncio.get_running_loop()
    registrar = _registrars.get(loop)
    if registrar is None:
        registrar = _registrars[loop] = Registrar()
    return registrar
