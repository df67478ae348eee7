"""Rate limits of the proxy path: token buckets per user and per edge, shared through
Redis across bridge processes. (The 429 answer itself: test_access_proxy.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest
from django.test import override_settings

from bridge_app.calls import throttling
from bridge_app.calls.proxy import ProxyError, ProxyTarget, call_guards
from bridge_app.core.directory import Principal
from tests.conftest import redis_available
from tests.support.live import REDIS_URL


class EdgeStub:
    def __init__(self, id: int, name: str) -> None:
        self.id, self.name = id, name


UMA = Principal(user_id=1, username="uma")
VERA = Principal(user_id=2, username="vera")
HPC1, HPC2 = EdgeStub(1, "hpc1"), EdgeStub(2, "hpc2")
TARGET = ProxyTarget("hpc1", "jobs", "status")


def admitted(limits: throttling.RateLimits, principal=UMA, edge=HPC1, n: int = 1) -> int:
    ok = 0
    for _ in range(n):
        try:
            limits(principal, edge, TARGET, "user")
            ok += 1
        except ProxyError as exc:
            assert exc.status == 429 and exc.error == "rate_limited"
            assert int(exc.headers["retry-after"]) >= 1
    return ok


def limits_with(**knobs) -> throttling.RateLimits:
    with override_settings(RADICAL_EDGE={"USER_RATE": 0, "EDGE_RATE": 0, **knobs}):
        limits = throttling.RateLimits()
    limits.redis_url = ""
    return limits


def test_the_limits_are_installed_with_generous_defaults():
    assert any(isinstance(g, throttling.RateLimits) for g in call_guards)
    limits = throttling.RateLimits()
    assert limits.users.rate >= 100 and limits.edges.rate >= limits.users.rate


def test_a_bucket_refills_at_its_rate():
    limiter = throttling.Limiter("user", rate=10, burst=5)
    now = 100.0
    assert [limiter.take("k", now) for _ in range(5)] == [0.0] * 5
    wait = limiter.take("k", now)
    assert wait == pytest.approx(0.1)
    assert limiter.take("k", now + 0.101) == 0.0
    assert limiter.take("k", now + 0.101) > 0
    assert limiter.take("k", now + 100) == 0.0  # refills to the burst, not beyond
    assert sum(limiter.take("k", now + 100) == 0.0 for _ in range(10)) == 4


async def test_users_and_edges_are_limited_separately():
    limits = limits_with(USER_RATE=1, USER_BURST=3, EDGE_RATE=1, EDGE_BURST=5)
    assert admitted(limits, UMA, HPC1, 10) == 3
    assert admitted(limits, VERA, HPC1, 10) == 2  # the edge's budget of 5 is spent
    assert admitted(limits, VERA, HPC2, 10) == 1  # vera's own 3, minus 2 used
    # A call refused by the edge's limit did not cost the user anything.
    assert limits.users.buckets[VERA.user_id].tokens == pytest.approx(0, abs=0.01)


async def test_a_rate_of_zero_turns_a_limit_off():
    limits = limits_with(USER_RATE=0, EDGE_RATE=0)
    assert admitted(limits, n=5000) == 5000


def test_idle_full_buckets_are_forgotten():
    limiter = throttling.Limiter("user", rate=10, burst=5)
    for key in range(100):
        limiter.take(key, 0.0)
    limiter.admitted.clear()
    limiter.forget_idle(throttling.IDLE_FORGET + 1)
    assert limiter.buckets == {}


@pytest.mark.redis
async def test_processes_share_one_budget_through_redis():
    if not redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_URL)
    await client.delete(*[k async for k in client.scan_iter("radical_edge:rl:*")] or ["none"])
    # Two "processes", 20 calls per second each way, bursts of 20: together they may
    # admit about 20/s + bursts, not 40/s.
    a = limits_with(USER_RATE=20, USER_BURST=20)
    b = limits_with(USER_RATE=20, USER_BURST=20)
    total = 0
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        total += admitted(a, n=5) + admitted(b, n=5)
        await a.sync(client)
        await b.sync(client)
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    # Unshared, the two would admit 2 * (20 + 20 * elapsed) ≈ 160.
    assert total <= 20 * elapsed + 2 * 20 + 15, total
    assert total >= 20 * elapsed, total
    await client.aclose()


@pytest.mark.redis
async def test_an_unreachable_redis_leaves_per_process_limits():
    limits = limits_with(USER_RATE=5, USER_BURST=5)
    import redis.asyncio as redis

    client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    assert admitted(limits, n=3) == 3
    await limits.sync(client)  # logs, does not raise
    assert limits.users.admitted == {UMA.user_id: 3}  # counted again at the next sync
    assert admitted(limits, n=10) == 2
    await client.aclose()
