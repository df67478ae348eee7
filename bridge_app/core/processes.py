"""Liveness of bridge processes, when several share Redis (the scaled-out mode).

Each process has a random id, which it puts in the channel names of the edges it holds
(``bridge.edge.<id>.…``), and beats once a second into a Redis sorted set. From the same
set every process learns which others are alive. When one stops beating — killed, or its
host gone — every survivor at once:

* refuses new calls to that process's edges with 503 (instead of sending them into a
  channel nobody reads), until the edges reconnect elsewhere;
* fails the calls it was waiting for there with 502, instead of letting them time out;
* and one of them marks those edges offline and drops them from every cache.

While Redis is unreachable, a process cannot tell who is alive, so it declares nobody dead
until it has seen a full liveness window of beats again, and it fails its own pending
calls (their answers travel through Redis) with 503. In the embedded mode there is one
process and none of this runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from django.conf import settings

from ..messages import edge_channel_prefix, process_of

__all__ = ["EDGE_CHANNEL_PREFIX", "PROCESS_ID", "ProcessRegistry", "process_of", "registry_enabled"]

log = logging.getLogger(__name__)

PROCESS_ID = os.urandom(6).hex()
EDGE_CHANNEL_PREFIX = edge_channel_prefix(PROCESS_ID)
KEY = "radical_edge:processes"
BEAT_INTERVAL = 1.0
DEAD_AFTER = 5.0
# After Redis comes back, subscriptions take a moment to be restored; messages sent in
# that window may be lost (pub/sub delivers at most once), so calls made then wait at
# most UNSTABLE_TIMEOUT and fail with 503 instead of hanging for the full timeout.
RECOVERY_GRACE = 5.0
UNSTABLE_TIMEOUT = 5.0



class ProcessRegistry:
    """Beats for this process and tracks the others (see the module docstring)."""

    def __init__(self, redis_url: str, *, on_dead: Callable[[set[str]], Awaitable[None]],
                 on_outage: Callable[[], None]) -> None:
        import redis.asyncio as redis

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self.on_dead = on_dead
        self.on_outage = on_outage
        self.live: set[str] = {PROCESS_ID}
        self.dead: set[str] = set()
        self.healthy_since: float | None = None
        self.outage = False  # Redis failed since the last recovery window began
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bridge-process-registry")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            # Leave at once rather than after DEAD_AFTER: a score already stale makes every
            # other process declare this one dead at its next beat (and fail at once the
            # calls still sent to its channels). Removing the member instead hid the exit:
            # nobody ever saw it stop beating, and calls sent to its channels waited for the
            # full timeout.
            await self.redis.zadd(KEY, {PROCESS_ID: time.time() - DEAD_AFTER - 1})
            await self.redis.aclose()
        except Exception:
            pass

    def unstable(self) -> bool:
        """True during a Redis outage and for RECOVERY_GRACE seconds after it."""
        if not self.outage:
            return False
        return self.healthy_since is None or time.monotonic() - self.healthy_since < RECOVERY_GRACE

    def is_dead(self, process_id: str | None) -> bool:
        return process_id is not None and process_id in self.dead

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.healthy_since is not None or not self.outage:
                    log.warning("Redis unreachable (%s): failing calls waiting for answers through it", exc)
                    self.on_outage()
                self.outage = True
                self.healthy_since = None
            await asyncio.sleep(BEAT_INTERVAL)

    async def beat(self) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(KEY, {PROCESS_ID: now})
        pipe.zrangebyscore(KEY, now - DEAD_AFTER, "+inf")
        pipe.zrangebyscore(KEY, "-inf", now - DEAD_AFTER)
        _, live, stale = await pipe.execute()
        if self.healthy_since is None:
            self.healthy_since = time.monotonic()
        elif self.outage and time.monotonic() - self.healthy_since >= RECOVERY_GRACE:
            self.outage = False
        self.live = {m.decode() for m in live} | {PROCESS_ID}
        if time.monotonic() - self.healthy_since < DEAD_AFTER:
            return  # just (re)connected: others have not had a chance to beat yet
        newly_dead = {m.decode() for m in stale} - self.dead - {PROCESS_ID}
        # Forget processes long gone, so the set does not grow across restarts.
        await self.redis.zremrangebyscore(KEY, "-inf", now - 3600)
        self.dead = (self.dead | newly_dead) - self.live
        if newly_dead:
            log.warning("bridge process(es) stopped beating: %s", ", ".join(sorted(newly_dead)))
            await self.on_dead(newly_dead)


registry: ProcessRegistry | None = None


def registry_enabled() -> bool:
    return bool(getattr(settings, "REDIS_URL", ""))
