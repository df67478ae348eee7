"""channels-redis's layers as the bridge uses them.

**The pub/sub layer with publishes batched** (``RADICAL_CHANNEL_LAYER=batched``; the default
with Redis is channels-redis's own, docs/OPERATIONS.md says why). channels-redis
publishes one message at a time per process, each under a lock and waiting for Redis's
reply before the next may go: with 32 calls crossing processes at once, 32 round trips in a
row. :class:`RedisPubSubChannelLayer` gathers what is sent while a batch is on its way and
sends it as the next batch, one pipeline (one write, one read) per batch: under load a round
trip carries many messages; a lone message waits for nobody. Order per sender and channel is
kept (batches go in order, a pipeline keeps its commands' order, Redis delivers in order);
a failed batch fails every send in it, as a failed publish did. ``send`` also skips the stock
layer's per-call proxy (a ``functools.partial`` and a coroutine to find the loop's layer).

**The core layer, with process channels that do not starve each other.**

The core layer receives every process-specific channel (a name with ``!``) through one
lock per process and a blocking pop on the channel's *non-local* name, the part up to
``!``. Its ``new_channel(prefix)`` puts the prefix into that part, so a process that
names its channels by kind (``bridge.inbox.``, ``bridge.edge.<process>.``, …) gets one
Redis list per kind — and a receive holding the lock, blocked on the inbox's list, keeps
the edges' receives from popping theirs: requests for an edge waited unread until the
caller timed out. Here every channel of a process shares one non-local name and the
prefix goes after the ``!``, where it still names the channel's kind.

Capacity: all of a process's channels are one Redis list, so a channel's capacity is
checked against the whole process's backlog (settings give them ``PROCESS_CHANNELS``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from channels_redis import pubsub
from channels_redis.core import RedisChannelLayer
from channels_redis.utils import _wrap_close

# Every process channel starts with this (the non-local name is it plus the client prefix).
PROCESS_CHANNELS = "proc."


class RedisCoreChannelLayer(RedisChannelLayer):
    async def new_channel(self, prefix: str = "specific.") -> str:
        return f"{PROCESS_CHANNELS}{self.client_prefix}!{prefix}{uuid.uuid4().hex}"


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._get_layer().send(channel, message)

    def _get_layer(self) -> pubsub.RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer


class _LoopLayer(pubsub.RedisPubSubLoopLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shards = [_BatchingShard(shard.host, self) for shard in self._shards]  # type: ignore[has-type]


class _BatchingShard(pubsub.RedisSingleShardConnection):
    def __init__(self, host: dict, channel_layer: Any) -> None:
        super().__init__(host, channel_layer)
        self._outbox: list[tuple[str, bytes, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None
        self.batches = 0  # pipelines sent (tests and benchmarks look)

    async def publish(self, channel: str, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._outbox.append((channel, message, done))
        if self._sender is None:
            self._sender = loop.create_task(self._send_batches())
        await done

    async def _send_batches(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                try:
                    async with self._lock:
                        self._ensure_redis()
                        if len(batch) == 1:  # a pipeline costs more than it saves for one
                            await self._redis.publish(batch[0][0], batch[0][1])
                        else:
                            async with self._redis.pipeline(transaction=False) as pipe:
                                for channel, message, _ in batch:
                                    pipe.publish(channel, message)
                                await pipe.execute()
                    self.batches += 1
                except BaseException as exc:
                    failure = exc if isinstance(exc, Exception) else ConnectionError("the publisher was stopped")
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(failure)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._sender = None
            # Left only if this task was cancelled (the loop is closing): nobody sends them now.
            left, self._outbox = self._outbox, []
            for _, _, done in left:
                if not done.done():
                    done.set_exception(ConnectionError("the publisher was stopped"))
