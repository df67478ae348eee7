"""The embedded default's channel layer: Channels' in-memory layer with three fixes.

Measured or found on the proxy path with channels 4.3 (names are validated once per
queue, not on every message):

* ``channel_capacity`` patterns are compiled; the stock layer iterates the raw dict in
  ``get_capacity`` and fails every send as soon as the setting is used.
* Messages are not deep-copied on send. A proxied call sends two messages, and deepcopy
  of each cost more than the rest of the hop; bodies (bytes) gain nothing from it. The
  contract that comes with it: **a message must not be mutated after it is sent** (nothing
  in this project does; consumers only read messages).
* Expired messages are swept at most once a second instead of on every ``receive`` and
  ``group_send``; the stock sweep walks every channel, so with a thousand connected edges
  each proxied call paid for a thousand queue checks.

Everything else (groups, expiry semantics, capacity errors) is the stock behaviour.
"""

from __future__ import annotations

import asyncio
import time

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as StockInMemoryChannelLayer

SWEEP_INTERVAL = 1.0


class InMemoryChannelLayer(StockInMemoryChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channel_capacity = self.compile_capacities(self.channel_capacity)
        self._next_sweep = 0.0

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            self._clean_expired()

    async def send(self, channel: str, message: dict) -> None:
        queue = self.channels.get(channel)
        if queue is None:
            # Validate names once per queue, not per message.
            assert isinstance(message, dict), "message is not a dict"
            self.require_valid_channel_name(channel)
            queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            queue.put_nowait((time.time() + self.expiry, message))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict:
        self._maybe_sweep()
        queue = self.channels.get(channel)
        if queue is None:
            self.require_valid_channel_name(channel)
            queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        self._maybe_sweep()
        for channel in list(self.groups.get(group, {})):
            try:
                await self.send(channel, message)
            except ChannelFull:
                pass
