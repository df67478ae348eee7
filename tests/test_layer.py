"""The embedded default's in-memory channel layer (bridge_app.core.layers)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from channels.exceptions import ChannelFull

from bridge_app.core.layers import InMemoryChannelLayer


@pytest.fixture
def layer() -> InMemoryChannelLayer:
    return InMemoryChannelLayer(capacity=3, expiry=60, channel_capacity={"big.*": 10})


async def test_send_then_receive_and_receive_then_send(layer):
    await layer.send("a", {"type": "x", "n": 1})
    assert await layer.receive("a") == {"type": "x", "n": 1}
    task = asyncio.ensure_future(layer.receive("b"))
    await asyncio.sleep(0)
    await layer.send("b", {"type": "x", "n": 2})
    assert await asyncio.wait_for(task, 1) == {"type": "x", "n": 2}
    assert layer.channels == {}  # idle channels leave nothing behind


async def test_order_is_kept_and_capacity_is_enforced_per_pattern(layer):
    for i in range(3):
        await layer.send("small", {"type": "x", "i": i})
    with pytest.raises(ChannelFull):
        await layer.send("small", {"type": "x"})
    assert [(await layer.receive("small"))["i"] for _ in range(3)] == [0, 1, 2]
    for i in range(10):
        await layer.send("big.one", {"type": "x", "i": i})
    with pytest.raises(ChannelFull):
        await layer.send("big.one", {"type": "x"})


async def test_expired_messages_are_dropped_and_their_channel_leaves_groups():
    layer = InMemoryChannelLayer(expiry=0)
    await layer.group_add("g", "c1")
    await layer.send("c1", {"type": "x"})
    await asyncio.sleep(0.01)
    layer._next_sweep = 0
    layer._maybe_sweep()
    assert "c1" not in layer.groups.get("g", {})
    task = asyncio.ensure_future(layer.receive("c1"))
    await asyncio.sleep(0.01)
    assert not task.done()  # the expired message is gone
    task.cancel()


async def test_a_cancelled_receiver_does_not_lose_a_message(layer):
    task = asyncio.ensure_future(layer.receive("c"))
    await asyncio.sleep(0)
    await layer.send("c", {"type": "x", "n": 1})
    task.cancel()  # cancelled after the hand-over, before it could run
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(layer.receive("c"), 1) == {"type": "x", "n": 1}


async def test_groups_fan_out_and_skip_full_channels(layer):
    for name in ("m1", "m2"):
        await layer.group_add("g", name)
    for _ in range(3):
        await layer.send("m2", {"type": "filler"})
    await layer.group_send("g", {"type": "hello"})
    assert await layer.receive("m1") == {"type": "hello"}
    assert [(await layer.receive("m2"))["type"] for _ in range(3)] == ["filler"] * 3


async def test_invalid_names_are_rejected(layer):
    with pytest.raises(TypeError):
        await layer.send("bad name!", {"type": "x"})


# -- the Redis core layer as settings configure it ------------------------------------------

CORE_LAYER_PROBE = """
import asyncio, json, os, sys, time
os.environ["DJANGO_SETTINGS_MODULE"] = "radical_edge_site.settings"
import django
django.setup()
from channels.layers import get_channel_layer

async def main():
    layer = get_channel_layer()
    channel = await layer.new_channel("probe.")
    # Nothing arrives for longer than one blocking pop (5 s): the receive must keep waiting.
    started = time.monotonic()
    try:
        await asyncio.wait_for(layer.receive(channel), layer.brpop_timeout + 2)
        outcome = "message?"
    except asyncio.TimeoutError:
        outcome = "still waiting"
    except Exception as exc:
        outcome = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    waited = time.monotonic() - started
    # A message sent while a receive is blocked arrives.
    task = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.2)
    await layer.send(channel, {"type": "probe", "n": 1})
    message = await asyncio.wait_for(task, 10)
    print(json.dumps({"outcome": outcome, "waited": waited, "message": message}))

asyncio.run(main())
"""


@pytest.mark.redis
def test_the_core_layer_keeps_waiting_past_its_blocking_pop(tmp_path):
    # redis-py 8 reads with a 5 s socket timeout by default, as long as the core layer's
    # blocking pop: without a longer read timeout a receive failed every 5 s, and a message
    # popped at that moment was lost.
    from tests.conftest import redis_available
    from tests.support.live import REDIS_URL, base_env

    if not redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    env = base_env(tmp_path, {"REDIS_URL": REDIS_URL, "RADICAL_CHANNEL_LAYER": "core",
                              "DJANGO_SECRET_KEY": "test-only-" + "x" * 50})
    result = subprocess.run([sys.executable, "-c", CORE_LAYER_PROBE], env=env, capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["outcome"] == "still waiting", answer
    assert answer["waited"] >= 6.5
    assert answer["message"] == {"type": "probe", "n": 1}


# -- the pub/sub layer with batched publishes (bridge_app/core/layers_redis.py), on real Redis --


@pytest.fixture
async def pubsub_layer():
    from tests.conftest import redis_available
    from tests.support.live import REDIS_URL

    if not redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    from bridge_app.core.layers_redis import RedisPubSubChannelLayer

    layer = RedisPubSubChannelLayer(hosts=[REDIS_URL], prefix="test-batching.")
    yield layer
    await layer.flush()


def _shard(layer, channel):
    return layer._get_layer()._get_shard(channel)


@pytest.mark.redis
async def test_concurrent_sends_share_round_trips_and_keep_their_order(pubsub_layer):
    """300 senders at once: every message arrives, in the order sent, in far fewer Redis
    round trips than messages (a lone send is a batch of one)."""
    channel = await pubsub_layer.new_channel("batch.")
    await pubsub_layer.send(channel, {"type": "t", "n": -1})
    assert (await asyncio.wait_for(pubsub_layer.receive(channel), 5))["n"] == -1
    shard = _shard(pubsub_layer, channel)
    before = shard.batches
    await asyncio.gather(*(pubsub_layer.send(channel, {"type": "t", "n": n}) for n in range(300)))
    got = [(await asyncio.wait_for(pubsub_layer.receive(channel), 5))["n"] for _ in range(300)]
    assert got == list(range(300))
    assert 1 <= shard.batches - before < 30, shard.batches - before


@pytest.mark.redis
async def test_a_batch_that_cannot_be_published_fails_every_send_in_it_and_the_next_ones_work():
    from tests.conftest import redis_available
    from tests.support.live import REDIS_URL

    if not redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    from bridge_app.core.layers_redis import RedisPubSubChannelLayer

    nowhere = RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:1/0"], prefix="test-batching.")
    results = await asyncio.gather(*(nowhere.send("test-batching.x", {"type": "t"}) for _ in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results), results
    assert _shard(nowhere, "test-batching.x")._sender is None  # nothing left waiting
    await nowhere.flush()
