"""The per-agent cache of queue_info: TTLs, force, single-flight collection, failures.

Time is a fake clock moved by the tests; nothing here sleeps on the wall clock, and the
concurrency tests coordinate with events, not delays.
"""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.plugins.queue_info.cache import CollectorCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Collector:
    """Counts runs; each run can be held open until the test releases it."""

    def __init__(self, *, hold: bool = False, fail: Exception | None = None) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.fail = fail

    async def __call__(self):
        self.runs += 1
        self.started.set()
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return f"value-{self.runs}"


async def test_a_fresh_value_is_served_from_the_cache_until_its_ttl_ends():
    clock = Clock()
    cache = CollectorCache(clock=clock)
    collect = Collector()
    first = await cache.get("k", 60, collect)
    assert (first.value, first.cached) == ("value-1", False)
    clock.now += 59.9
    again = await cache.get("k", 60, collect)
    assert (again.value, again.cached, collect.runs) == ("value-1", True, 1)
    assert again.collected_at == first.collected_at
    clock.now += 0.2
    stale = await cache.get("k", 60, collect)
    assert (stale.value, stale.cached, collect.runs) == ("value-2", False, 2)


async def test_the_ttl_is_the_callers_so_one_entry_can_serve_short_and_long_lived_views():
    clock = Clock()
    cache = CollectorCache(clock=clock)
    collect = Collector()
    await cache.get("k", 60, collect)
    clock.now += 10
    assert (await cache.get("k", 60, collect)).cached is True
    assert (await cache.get("k", 5, collect)).cached is False


async def test_force_bypasses_a_fresh_value_and_refreshes_it():
    cache = CollectorCache(clock=Clock())
    collect = Collector()
    await cache.get("k", 60, collect)
    forced = await cache.get("k", 60, collect, force=True)
    assert (forced.value, forced.cached, collect.runs) == ("value-2", False, 2)
    assert (await cache.get("k", 60, collect)).value == "value-2"


async def test_concurrent_misses_run_the_collector_once():
    cache = CollectorCache(clock=Clock())
    collect = Collector(hold=True)
    waiters = [asyncio.ensure_future(cache.get("k", 60, collect)) for _ in range(20)]
    await collect.started.wait()
    await asyncio.sleep(0)  # let every waiter reach the shared run
    collect.release.set()
    results = await asyncio.gather(*waiters)
    assert collect.runs == 1 and cache.runs == 1
    assert {r.value for r in results} == {"value-1"}
    assert all(not r.cached for r in results)


async def test_a_forced_request_joins_a_collection_that_is_already_running():
    cache = CollectorCache(clock=Clock())
    collect = Collector(hold=True)
    first = asyncio.ensure_future(cache.get("k", 60, collect))
    await collect.started.wait()
    forced = asyncio.ensure_future(cache.get("k", 60, collect, force=True))
    await asyncio.sleep(0)
    collect.release.set()
    assert (await first).value == (await forced).value == "value-1"
    assert collect.runs == 1


async def test_keys_are_collected_independently():
    cache = CollectorCache(clock=Clock())
    a, b = Collector(), Collector()
    await asyncio.gather(cache.get(("jobs", "alice"), 5, a), cache.get(("jobs", "bob"), 5, b))
    assert (a.runs, b.runs, len(cache)) == (1, 1, 2)


async def test_a_failure_reaches_every_waiter_and_is_not_cached():
    cache = CollectorCache(clock=Clock())
    failing = Collector(hold=True, fail=RuntimeError("sinfo exploded"))
    waiters = [asyncio.ensure_future(cache.get("k", 60, failing)) for _ in range(3)]
    await failing.started.wait()
    await asyncio.sleep(0)
    failing.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert failing.runs == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    ok = Collector()
    assert (await cache.get("k", 60, ok)).value == "value-1"  # the next request tries again


async def test_a_cancelled_caller_does_not_cancel_the_shared_collection():
    cache = CollectorCache(clock=Clock())
    collect = Collector(hold=True)
    impatient = asyncio.ensure_future(cache.get("k", 60, collect))
    patient = asyncio.ensure_future(cache.get("k", 60, collect))
    await collect.started.wait()
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    collect.release.set()
    assert (await patient).value == "value-1"
    assert (await cache.get("k", 60, collect)).cached is True  # and it was stored for the next caller


async def test_a_collection_nobody_waits_for_any_more_still_fills_the_cache():
    cache = CollectorCache(clock=Clock())
    collect = Collector(hold=True)
    only = asyncio.ensure_future(cache.get("k", 60, collect))
    await collect.started.wait()
    only.cancel()
    collect.release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    hit = await cache.get("k", 60, collect)
    assert (hit.value, hit.cached, collect.runs) == ("value-1", True, 1)


async def test_the_oldest_entries_go_when_the_cache_is_full():
    clock = Clock()
    cache = CollectorCache(max_entries=3, clock=clock)
    for user in ("a", "b", "c", "d"):
        clock.now += 1
        await cache.get(("jobs", user), 60, Collector())
    assert len(cache) == 3
    collect = Collector()
    assert (await cache.get(("jobs", "a"), 60, collect)).cached is False
    assert (await cache.get(("jobs", "d"), 60, collect)).cached is True


async def test_invalidate_forgets_values():
    cache = CollectorCache(clock=Clock())
    collect = Collector()
    await cache.get("k", 60, collect)
    cache.invalidate("k")
    assert (await cache.get("k", 60, collect)).cached is False
    cache.invalidate()
    assert len(cache) == 0
