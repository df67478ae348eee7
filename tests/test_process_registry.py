"""The process registry (bridge_app/core/processes.py) against a real Redis: a process that
stops gracefully is declared dead by the others at their next beat, as a killed one is
after DEAD_AFTER, so that calls sent to its channels fail at once instead of waiting."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge_app.core import processes
from tests.support.live import REDIS_URL

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_url():
    from tests.conftest import redis_available

    if not redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    return REDIS_URL


class Witness(processes.ProcessRegistry):
    """A registry that has been running for a while (past its start-up window)."""

    def __init__(self, url: str) -> None:
        self.died: list[set[str]] = []

        async def on_dead(ids: set[str]) -> None:
            self.died.append(ids)

        super().__init__(url, on_dead=on_dead, on_outage=lambda: None)
        self.healthy_since = time.monotonic() - processes.DEAD_AFTER - 1


async def test_a_process_that_stops_gracefully_is_declared_dead_at_the_next_beat(redis_url, monkeypatch):
    leaving_id = "feedfacecafe"
    leaving = processes.ProcessRegistry(redis_url, on_dead=lambda ids: asyncio.sleep(0), on_outage=lambda: None)
    witness = Witness(redis_url)
    try:
        monkeypatch.setattr(processes, "PROCESS_ID", leaving_id)
        await leaving.beat()
        monkeypatch.setattr(processes, "PROCESS_ID", "0123456789ab")
        await witness.beat()
        assert leaving_id in witness.live and not witness.is_dead(leaving_id)
        monkeypatch.setattr(processes, "PROCESS_ID", leaving_id)
        await leaving.stop()
        monkeypatch.setattr(processes, "PROCESS_ID", "0123456789ab")
        await witness.beat()
        assert witness.is_dead(leaving_id), "a graceful exit must not hide the process's end"
        assert leaving_id not in witness.live and leaving_id in set().union(*witness.died)
        channel = f"bridge.edge.{leaving_id}.abc"
        assert witness.is_dead(processes.process_of(channel))
    finally:
        await witness.redis.zrem(processes.KEY, leaving_id, "0123456789ab")
        await witness.redis.aclose()
