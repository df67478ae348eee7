"""One cache per agent for collected scheduler data: short TTLs and single-flight collection.

Scheduler commands are slow and load a shared controller, so every session of the plugin shares
one :class:`CollectorCache`. A value is fresh for the TTL its caller passes; when it is stale (or
``force`` asks to bypass it) the collector runs once, and every request that misses while that
run is under way awaits the same run instead of starting another. Failures are not cached: the
next request tries again.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Hashable
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Cached(Generic[T]):
    """A cache answer: the value, when it was collected (epoch seconds), and whether it was a hit."""

    value: T
    collected_at: float
    cached: bool

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.collected_at)


@dataclass
class _Entry:
    value: Any
    stamp: float  # on the cache's clock, for TTLs
    collected_at: float  # wall clock, for callers


class CollectorCache:
    """A TTL cache whose misses run a collector coroutine once per key at a time.

    Must be used from a single event loop. ``clock`` (monotonic seconds) is injectable so tests
    can move time instead of sleeping.
    """

    def __init__(self, *, max_entries: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}
        self._inflight: dict[Hashable, asyncio.Future[_Entry]] = {}
        self.hits = 0
        self.misses = 0
        self.runs = 0

    async def get(self, key: Hashable, ttl: float, collect: Callable[[], Awaitable[T]], *,
                  force: bool = False) -> Cached[T]:
        """The value for ``key``: cached when younger than ``ttl`` seconds (and not ``force``),
        else from a collector run, shared with every concurrent miss of the same key.

        A caller that is cancelled while waiting does not cancel the shared run: the others
        still get its result, and it is cached for the next request.
        """
        entry = self._entries.get(key)
        if not force and entry is not None and self._clock() - entry.stamp < ttl:
            self.hits += 1
            return Cached(entry.value, entry.collected_at, True)
        self.misses += 1
        run = self._inflight.get(key)
        if run is None:
            run = asyncio.ensure_future(self._collect(key, collect))
            self._inflight[key] = run
            run.add_done_callback(functools.partial(self._finished, key))
        entry = await asyncio.shield(run)
        return Cached(entry.value, entry.collected_at, False)

    async def _collect(self, key: Hashable, collect: Callable[[], Awaitable[Any]]) -> _Entry:
        self.runs += 1
        value = await collect()
        entry = _Entry(value, self._clock(), time.time())
        self._entries[key] = entry
        self._prune()
        return entry

    def _finished(self, key: Hashable, fut: asyncio.Future) -> None:
        if self._inflight.get(key) is fut:
            del self._inflight[key]
        # Every waiter may have been cancelled; retrieve the exception so asyncio does not
        # log "exception was never retrieved" for an error the next request reports anyway.
        if not fut.cancelled():
            fut.exception()

    def _prune(self) -> None:
        if len(self._entries) <= self.max_entries:
            return
        oldest = sorted(self._entries, key=lambda k: self._entries[k].stamp)
        for key in oldest[: len(self._entries) - self.max_entries]:
            del self._entries[key]

    def invalidate(self, key: Hashable | None = None) -> None:
        """Forget ``key`` (or everything); runs under way are not interrupted."""
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
