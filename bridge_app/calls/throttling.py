"""Per-user and per-edge rate limits on the proxy path: 429 ``rate_limited`` + ``Retry-After``.

The proxy aims at thousands of calls per second at sub-millisecond latency, so a limit
check may not cost a database query, a thread hop or a network round trip. Each process
therefore keeps **token buckets in memory** (rate ``R`` per second, ``B`` deep): one
dict lookup and a few float operations per call (about a microsecond).

With ``REDIS_URL`` set, several bridge processes share one budget: every
``RATE_LIMIT_SYNC_INTERVAL`` seconds each process adds what it admitted per key to a
counter in Redis (one pipelined round trip for all active keys) and reads back the totals;
whatever the *other* processes admitted since the last sync is debited from its own
buckets. Across P processes the global rate converges to R; the overshoot is bounded by
what the others admit in one interval (and B per process for a key it had not seen yet).
A per-call Redis round trip would be exact but costs about as much as the whole proxied
call (docs/OPERATIONS.md, "Rate limits", has the measurements). If Redis is unreachable,
each process goes on with its own buckets (fail open to per-process limits).

Everything runs on the event loop: the buckets are touched only from it, and the sync
task is one per process and loop, started by the first limited call.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from typing import Any

from django.conf import settings

from ..conf import edge_settings
from ..core import hooks
from .errors import ProxyError

log = logging.getLogger(__name__)

# Redis counters of keys nobody uses expire after this many seconds.
COUNTER_TTL = 600
# A full bucket idle this long is forgotten (it would be created full again anyway).
IDLE_FORGET = 60.0


class Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Limiter:
    """Token buckets of one scope (``user`` or ``edge``), keyed by id."""

    def __init__(self, scope: str, rate: float, burst: float) -> None:
        self.scope = scope
        self.rate = float(rate)
        self.burst = max(float(burst), 1.0)
        self.buckets: dict[Any, Bucket] = {}
        # Calls admitted per key since the last sync, and the shared total seen then.
        self.admitted: dict[Any, int] = {}
        self.seen_total: dict[Any, int] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: Any, now: float) -> float:
        """Admit one call for ``key``: 0.0 if admitted, else the seconds until it would be."""
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(self.burst, now)
        tokens = bucket.tokens + (now - bucket.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket.stamp = now
        if tokens < 1.0:
            bucket.tokens = tokens
            return (1.0 - tokens) / self.rate
        bucket.tokens = tokens - 1.0
        self.admitted[key] = self.admitted.get(key, 0) + 1
        return 0.0

    def wait(self, key: Any, now: float) -> float:
        """Seconds until ``key`` could be admitted (0.0 now), without taking anything."""
        bucket = self.buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def refund(self, key: Any) -> None:
        """Give back a call admitted by :meth:`take` that was refused by another limit."""
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + 1.0)
        count = self.admitted.get(key, 0)
        if count > 1:
            self.admitted[key] = count - 1
        else:
            self.admitted.pop(key, None)

    def debit(self, key: Any, calls: int, now: float) -> None:
        """Charge ``calls`` admitted elsewhere (other processes) to ``key``'s bucket. It may
        go negative: the debt is paid back at ``rate`` before the next call is admitted."""
        bucket = self.buckets.get(key)
        if bucket is None:
            return
        tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.tokens = tokens - calls
        bucket.stamp = now

    def forget_idle(self, now: float) -> None:
        """Drop buckets that have been full and unused for a while (bounded memory)."""
        for key in [k for k, b in self.buckets.items()
                    if now - b.stamp > IDLE_FORGET and b.tokens + (now - b.stamp) * self.rate >= self.burst
                    and k not in self.admitted]:
            del self.buckets[key]
            self.seen_total.pop(key, None)

    def take_admitted(self) -> dict[Any, int]:
        admitted, self.admitted = self.admitted, {}
        return admitted

    def active_keys(self) -> list[Any]:
        return list(self.buckets)


class RateLimits:
    """The proxy's call guard: per-user, then per-edge limits (see the module docstring)."""

    def __init__(self) -> None:
        self.users = Limiter("user", edge_settings.USER_RATE, edge_settings.USER_BURST)
        self.edges = Limiter("edge", edge_settings.EDGE_RATE, edge_settings.EDGE_BURST)
        self.redis_url: str = getattr(settings, "REDIS_URL", "") or ""
        self.sync_interval = max(float(edge_settings.RATE_LIMIT_SYNC_INTERVAL), 0.05)
        self._tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = (
            weakref.WeakKeyDictionary())
        self._last_loop: asyncio.AbstractEventLoop | None = None
        self._redis_failing = False

    def __call__(self, principal: Any, edge: Any, target: Any, role: str) -> None:
        """``proxy.call_guards`` hook. Raises ProxyError(429) when a limit is reached."""
        loop = asyncio.get_running_loop()
        if loop is not self._last_loop:
            self._ensure_task(loop)
        now = time.monotonic()
        users, edges = self.users, self.edges
        if users.rate > 0:
            wait = users.take(principal.user_id, now)
            if wait:
                raise _limited(wait, f"too many calls from {principal.username}: the limit is "
                                     f"{users.rate:g} per second (bursts of {users.burst:g})")
        if edges.rate > 0:
            wait = edges.take(edge.id, now)
            if wait:
                if users.rate > 0:
                    users.refund(principal.user_id)
                raise _limited(wait, f"too many calls to edge '{edge.name}': the limit is "
                                     f"{edges.rate:g} per second (bursts of {edges.burst:g})")
        return None

    # -- background: forget idle buckets, share budgets through Redis ----------------------

    def _ensure_task(self, loop: asyncio.AbstractEventLoop) -> None:
        task = self._tasks.get(loop)
        if task is None or task.done():
            self._tasks[loop] = loop.create_task(self._run(), name="rate-limit-sync")
        self._last_loop = loop

    async def _run(self) -> None:
        client = None
        if self.redis_url:
            import redis.asyncio as redis

            client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            while True:
                await asyncio.sleep(self.sync_interval if client is not None else IDLE_FORGET / 2)
                try:
                    if client is not None:
                        await self.sync(client)
                    else:
                        # Without Redis nobody reads the counts; keep them from growing.
                        self.users.admitted.clear()
                        self.edges.admitted.clear()
                    now = time.monotonic()
                    self.users.forget_idle(now)
                    self.edges.forget_idle(now)
                except Exception:
                    log.exception("rate limit housekeeping failed")
        finally:
            if client is not None:
                await client.aclose()

    async def sync(self, client: Any) -> None:
        """Publish this process's admissions and debit the other processes' (one round trip)."""
        batches = []
        pipe = client.pipeline(transaction=False)
        for limiter in (self.users, self.edges):
            if limiter.rate <= 0:
                continue
            admitted = limiter.take_admitted()
            keys: set[Any] | list[Any] = set(admitted) | set(limiter.active_keys())
            for key in keys:
                name = f"radical_edge:rl:{limiter.scope}:{key}"
                pipe.incrby(name, admitted.get(key, 0))
                pipe.expire(name, COUNTER_TTL)
            batches.append((limiter, admitted, list(keys)))
        if not any(batch_keys for _, _, batch_keys in batches):
            return
        try:
            results = await pipe.execute()
        except Exception as exc:
            if not self._redis_failing:
                log.warning("rate limits: Redis unreachable (%s); limits are per process until it is back", exc)
            self._redis_failing = True
            for limiter, admitted, _ in batches:
                for key, count in admitted.items():  # count them again at the next sync
                    limiter.admitted[key] = limiter.admitted.get(key, 0) + count
            return
        self._redis_failing = False
        now = time.monotonic()
        totals = iter(results[0::2])
        for limiter, admitted, keys in batches:
            for key in keys:
                total = int(next(totals))
                previous = limiter.seen_total.get(key)
                limiter.seen_total[key] = total
                if previous is None:
                    continue
                others = total - previous - admitted.get(key, 0)
                if others > 0:
                    limiter.debit(key, others, now)


class AuthFailures:
    """Failed API-token attempts per client address: a guesser gets AUTH_FAILURE_BURST
    tries, then one per 1/AUTH_FAILURE_RATE seconds (``429 too_many_failures`` before its
    token is even looked up, so it costs no database query either), and every refusal is in
    the audit trail. Per process: a guesser spread over P processes gets P times the rate."""

    def __init__(self) -> None:
        self.limiter = Limiter("auth", edge_settings.AUTH_FAILURE_RATE, edge_settings.AUTH_FAILURE_BURST)

    def refusal(self, address: str):
        """The ProxyError to answer instead of looking the token up, or None."""
        if not self.limiter.enabled or not self.limiter.buckets:
            return None
        wait = self.limiter.wait(address, time.monotonic())
        if wait <= 0:
            return None
        seconds = max(1, math.ceil(wait))
        return ProxyError(429, "too_many_failures", f"too many invalid tokens from your address; retry in {seconds} s",
                          {"retry-after": str(seconds)})

    def failed(self, address: str) -> None:
        if self.limiter.enabled:
            now = time.monotonic()
            self.limiter.take(address, now)
            self.limiter.admitted.clear()  # never synchronised: nothing to count
            if len(self.limiter.buckets) > 10_000:
                self.limiter.forget_idle(now)


auth_failures = AuthFailures()


def client_address(scope: dict) -> str:
    """The client's address as the ASGI server saw it (X-Forwarded-For applied by the server
    only from trusted proxies)."""
    client = scope.get("client")
    return client[0] if client else ""


def _limited(wait: float, detail: str) -> Exception:
    seconds = max(1, math.ceil(wait))
    return ProxyError(429, "rate_limited", f"{detail}; retry in {seconds} s", {"retry-after": str(seconds)})


rate_limits: RateLimits | None = None


def install() -> None:
    """Add the rate limits to the proxy's call guards (idempotent; none if both rates are 0)."""
    global rate_limits, auth_failures
    auth_failures = AuthFailures()
    if rate_limits is not None and rate_limits in hooks.call_guards:
        hooks.call_guards.remove(rate_limits)
    rate_limits = RateLimits()
    if rate_limits.users.enabled or rate_limits.edges.enabled:
        hooks.call_guards.append(rate_limits)
