"""The per-process runtime: what every bridge process starts once and stops once, under
every ASGI server.

Started: the reply inbox (``rpc.get_inbox``), which subscribes to cache invalidations;
with it (``inbox_started``, whoever started the inbox first) the housekeeping chores
(``hooks.register_chore``: audit flush, token touches, sweeps) and, when processes share Redis,
the process registry's heartbeat, whose callbacks fail the calls of dead processes.
Stopped: event streams ended (clients resume elsewhere with Last-Event-ID), edges drained
(told to reconnect elsewhere, their calls in flight answered), the inbox stopped, the
audit and event buffers written.

Who calls it:

* uvicorn: the ASGI lifespan (``lifespan.Lifespan``), and ``radical-edge-bridge``'s
  server subclass, which drains before uvicorn closes sockets;
* daphne (``--server daphne``, plain ``daphne …asgi:application`` and ``manage.py
  runserver``), which has no lifespan: :func:`install_for_daphne`, called by ``asgi.py``,
  starts the runtime when the reactor runs and stops it on SIGTERM before daphne cancels
  its connections;
* any server: :class:`RuntimeApp` starts it on a process's first request or connection,
  if nothing above has.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import weakref
from typing import Any

from . import hooks

log = logging.getLogger(__name__)

# How often background chores run in each process (seconds).
HOUSEKEEPING_INTERVAL = 30.0
# Re-join the broadcast group this often (the Redis core layer expires memberships).
GROUP_REFRESH_INTERVAL = 3600.0

_started: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
# The loop of the last start, checked first: a WeakSet lookup makes a weak reference.
_last_started: asyncio.AbstractEventLoop | None = None
_housekeepers: weakref.WeakKeyDictionary[Any, asyncio.Task] = weakref.WeakKeyDictionary()
register_chore = hooks.register_chore  # the chores live in hooks (collector and audit add theirs there)


def inbox_started(inbox: Any) -> None:
    """``rpc.on_start``: the process's inbox is up; start its housekeeping and, when
    processes share Redis, the process registry."""
    from django.conf import settings

    from . import processes

    if processes.registry_enabled() and processes.registry is None:
        processes.registry = processes.ProcessRegistry(
            settings.REDIS_URL, on_dead=lambda ids: _processes_died(inbox, ids),
            on_outage=lambda: _layer_outage(inbox))
        processes.registry.start()
    _housekeepers[inbox] = asyncio.get_running_loop().create_task(_housekeeping(inbox), name="bridge-housekeeping")


async def inbox_stopping(inbox: Any) -> None:
    """``rpc.on_stop``: stop what :func:`inbox_started` started."""
    from . import processes

    if processes.registry is not None:
        await processes.registry.stop()
        processes.registry = None
    task = _housekeepers.pop(inbox, None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _processes_died(inbox: Any, process_ids: set[str]) -> None:
    from channels.db import database_sync_to_async

    from .. import messages
    from ..domain import services
    from ..streams import events
    from .broadcast import abroadcast
    from .directory import directory

    inbox.fail_calls(502, "edge_disconnected", "the bridge process holding the edge stopped; it will reconnect",
                     where=lambda c: messages.process_of(c.edge_channel) in process_ids)
    try:
        names = await database_sync_to_async(services.edges_mark_process_offline)(process_ids=process_ids)
    except Exception:
        log.warning("could not mark the edges of stopped processes offline", exc_info=True)
        return
    for name in names:
        directory.invalidate("edge", name)
        await abroadcast(messages.invalidation("edge", name))
        await events.topology_changed(name, online=False)


def _layer_outage(inbox: Any) -> None:
    from ..streams.sse import streams_shutdown

    inbox.fail_calls(503, "bridge_unavailable", "the bridge lost its channel layer; retry shortly")
    # Live events published meanwhile are lost (pub/sub); ended streams come back with
    # Last-Event-ID and get them from the database.
    streams_shutdown("the bridge lost its channel layer")


async def _housekeeping(inbox: Any) -> None:
    from .directory import directory

    since_refresh = 0.0
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL)
        since_refresh += HOUSEKEEPING_INTERVAL
        if since_refresh >= GROUP_REFRESH_INTERVAL:
            since_refresh = 0.0
            try:
                await inbox.refresh_membership()
            except Exception:
                log.warning("could not refresh broadcast membership", exc_info=True)
        directory.prune()
        inbox.forget_down_channels()
        for chore in list(hooks.chores):
            try:
                await chore()
            except Exception:
                log.warning("housekeeping chore %s failed", getattr(chore, "__name__", chore), exc_info=True)


async def runtime_start() -> None:
    """Start this process's runtime on the running event loop (idempotent; a layer that is
    not reachable yet is retried by the first call that needs it)."""
    from .rpc import get_inbox

    global _last_started
    loop = asyncio.get_running_loop()
    if loop in _started:
        return
    _started.add(loop)
    _last_started = loop
    try:
        await get_inbox()
    except Exception as exc:
        _started.discard(loop)
        _last_started = None
        log.warning("channel layer not reachable at startup: %s", exc)
    from ..conf import edge_settings
    from .directory import directory

    directory.warming = True  # edges load ahead of their first call (directory.py)
    if edge_settings.NOTIFY_WORKER:
        from ..notifications.worker import worker_start

        worker_start()


def _once(name: str, work) -> asyncio.Task:
    """One task per event loop for ``name``: hooks of several servers may ask for the same
    step; it is done once and every caller waits for it."""
    loop = asyncio.get_running_loop()
    steps = _steps.setdefault(loop, {})
    if name not in steps:
        steps[name] = loop.create_task(work(), name=f"bridge-runtime-{name}")
    return steps[name]


_steps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Task]] = weakref.WeakKeyDictionary()


async def runtime_drain() -> None:
    """First step of a graceful stop, before the server waits for open requests: event
    streams end (their clients resume elsewhere with Last-Event-ID) and every edge held
    here is told to reconnect elsewhere, once the calls in flight on it are answered."""
    await asyncio.shield(_once("drain", _drain))


async def runtime_stop() -> None:
    """Stop gracefully: drain (if not done yet), let the calls still waiting in this
    process's inbox finish (at most DRAIN_TIMEOUT), stop the inbox, write the buffers."""
    await asyncio.shield(_once("stop", _stop))


async def _drain() -> None:
    from ..agents.consumers import shutdown_all
    from ..conf import edge_settings
    from ..streams.sse import streams_shutdown

    streams_shutdown()
    try:
        count = await asyncio.wait_for(shutdown_all(), edge_settings.DRAIN_TIMEOUT + 5)
        if count:
            log.info("drained %d edge connection(s)", count)
    except Exception:
        log.exception("draining edges failed")


async def _stop() -> None:
    from ..conf import edge_settings
    from ..observability.audit import audit_flush
    from ..streams.events import events_flush
    from .rpc import get_inbox_if_started, stop_inbox

    await runtime_drain()
    inbox = get_inbox_if_started()
    if inbox is not None:
        # Calls from this process's clients to edges elsewhere (uvicorn waited for them
        # already; daphne cancels them right after this).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + edge_settings.DRAIN_TIMEOUT
        while inbox.calls and loop.time() < deadline:
            await asyncio.sleep(0.05)
    await stop_inbox()
    from .directory import directory

    directory.warming = False
    from ..notifications.worker import worker_stop

    await worker_stop()
    global _last_started
    _started.discard(asyncio.get_running_loop())
    _last_started = None
    try:
        await audit_flush()  # calls recorded since the last write
    except Exception:
        log.warning("could not write the last audit records", exc_info=True)
    # Events since the last batch (edges that just left, their last notifications).
    await events_flush()
    from ..observability import metrics

    metrics.fold()  # the last second's counts, for a multiprocess site's metric files


def started_here() -> bool:
    """Whether the runtime runs on the running event loop."""
    loop = asyncio.get_running_loop()
    return loop is _last_started or loop in _started


class RuntimeApp:
    """ASGI middleware: starts the runtime on a process's first request or connection
    (costs a set lookup per request afterwards)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "lifespan" and not started_here():
            await runtime_start()
        return await self.app(scope, receive, send)


def install_for_daphne() -> None:
    """Under daphne (imported, as its CLI and runserver do before loading the application):
    start the runtime when the reactor runs, and on shutdown drain and flush before daphne
    cancels every connection (its own 'before shutdown' trigger would cut the calls in
    flight that a drain lets finish). Does nothing under other servers."""
    server_module = sys.modules.get("daphne.server")
    if server_module is None:
        return
    Server = server_module.Server
    if getattr(Server.kill_all_applications, "_radical_drains", False):
        return
    from twisted.internet import defer, reactor

    kill_all = Server.kill_all_applications

    def drain_then_kill_all(self):
        stopped = defer.Deferred.fromFuture(asyncio.ensure_future(runtime_stop()))
        stopped.addErrback(lambda failure: log.error("graceful shutdown failed: %s", failure.getErrorMessage()))
        stopped.addCallback(lambda _: kill_all(self))
        return stopped

    drain_then_kill_all._radical_drains = True  # type: ignore[attr-defined]
    Server.kill_all_applications = drain_then_kill_all
    reactor.callWhenRunning(lambda: asyncio.ensure_future(runtime_start()))
