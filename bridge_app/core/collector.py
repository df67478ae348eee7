"""When the bridge's cyclic garbage collector walks everything: full collections on the
bridge's schedule instead of CPython's.

With 1,000 edges connected a bridge process tracks about 100,000 objects besides its frozen
start-up set (``asgi.py``): some hundred per connection, most of them the server's
(uvicorn's or daphne's) and the websockets library's per-connection state. A full
(generation 2) collection walks all of them, 30 to 200 ms depending on the machine, and the
event loop stands still meanwhile. CPython starts one after every 10 generation-1
collections once the objects promoted since the last one exceed a quarter of the old
generation: while a thousand edges connect at once, that is two or three full collections in
the middle of the burst, a fifth of the bridge's CPU for it (docs/BENCHMARKS.md), and they
cannot free anything, because the new connections are all alive.

What a full collection does free is mostly what ended connections left in reference
cycles that young collections no longer see: 70,000 to 97,000 objects after 1,000 edges
left at once (bench.edges), a few per edge when a handful leave. So the bridge runs full
collections when there is something to free:

* shortly after edges disconnect (:func:`collect_soon`, from ``EdgeConsumer``): QUIET
  seconds after the last of a burst of disconnects, at most MAX_DELAY after the first;
* every HOUSEKEEPING_INTERVAL seconds (a per-process chore), for whatever else reached the
  old generation, unless CPython ran one itself since;

and CPython's own full collections run only every GEN2_THRESHOLD generation-1 collections, a
backstop that bounds memory under any load. ``RADICAL_EDGE["GC_SCHEDULED"] = False`` leaves
CPython's defaults alone.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

GEN2_THRESHOLD = 100  # CPython's default is 10
QUIET = 0.5
MAX_DELAY = 5.0


class Scheduler:
    """One per process: the pending post-disconnect collection, if any."""

    def __init__(self) -> None:
        self.enabled = False
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first = 0.0
        self._full_seen = 0  # CPython's count of generation-2 collections at the last chore

    def install(self) -> None:
        from ..conf import edge_settings

        if not edge_settings.GC_SCHEDULED:
            return
        threshold0, threshold1, _ = gc.get_threshold()
        gc.set_threshold(threshold0, threshold1, GEN2_THRESHOLD)
        if not self.enabled:
            self.enabled = True
            from . import hooks

            hooks.register_chore(self.chore)

    def collect_soon(self) -> None:
        """Schedule a full collection once a burst of disconnects has settled."""
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._handle is None or self._loop is not loop:  # (a loop that ended left its handle behind)
            self._first, self._loop = now, loop
        else:
            self._handle.cancel()
        self._handle = loop.call_later(max(0.0, min(QUIET, self._first + MAX_DELAY - now)), self.collect,
                                       "edges disconnected")

    def collect(self, reason: str) -> int:
        """A full collection now; returns the number of unreachable objects found."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        started = time.perf_counter()
        found = gc.collect()
        self._full_seen = gc.get_stats()[2]["collections"]
        log.debug("full garbage collection (%s): %d unreachable objects in %.1f ms", reason, found,
                  (time.perf_counter() - started) * 1000, extra={"reason": reason, "unreachable": found})
        from ..observability import metrics  # (imports Django's HTTP machinery: not at module import)

        metrics.GC_FULL.labels(reason).inc()
        metrics.GC_UNREACHABLE.labels(reason).inc(found)
        return found

    async def chore(self) -> None:
        pending = self._handle is not None and self._loop is asyncio.get_running_loop()
        if gc.get_stats()[2]["collections"] == self._full_seen and not pending:
            self.collect("periodic")
        else:
            self._full_seen = gc.get_stats()[2]["collections"]


scheduler = Scheduler()
install = scheduler.install
collect_soon = scheduler.collect_soon
