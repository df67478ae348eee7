"""The embedded default's channel layer: a lean in-memory layer.

It keeps the stock ``channels.layers.InMemoryChannelLayer`` API and semantics (capacity
and ``ChannelFull``, message expiry, groups with expiry, a channel whose message expired
leaves its groups) and fixes what we measured or found on the proxy path with channels 4.3:

* A message sent to a channel whose receiver is already waiting is handed straight to
  it, with no queue in between. An idle channel holds one future, not an asyncio.Queue
  (three deques and an Event): with a thousand edges connected that is most of the
  per-edge memory the layer costs.
* Messages are not deep-copied on send. A proxied call sends two messages, and deepcopy
  of each cost more than the rest of the hop; bodies (bytes) gain nothing from it. The
  contract that comes with it: **a message must not be mutated after it is sent** (nothing
  in this project does; consumers only read messages).
* Expired messages are swept at most once a second, not on every receive; the stock
  sweep walks every channel, so each proxied call paid for every connected edge.
* ``channel_capacity`` patterns are compiled; the stock layer iterates the raw dict in
  ``get_capacity`` and fails every send as soon as the setting is used.
* Channel names are validated once per channel, not per message.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as StockInMemoryChannelLayer

SWEEP_INTERVAL = 1.0


class _Channel:
    """Buffered messages (``(expires_at, message)``, created on demand) and waiting receivers."""

    __slots__ = ("capacity", "messages", "waiters")

    def __init__(self, capacity: int) -> None:
        self.messages: collections.deque | None = None
        self.waiters: collections.deque | None = None
        self.capacity = capacity

    def idle(self) -> bool:
        return not self.messages and not self.waiters


class InMemoryChannelLayer(StockInMemoryChannelLayer):
    channel_capacity: Any  # set by the stock layer's __init__, which mypy cannot see into

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channel_capacity = self.compile_capacities(self.channel_capacity)
        self.channels: dict[str, _Channel] = {}
        self._next_sweep = 0.0

    def _channel(self, name: str) -> _Channel:
        chan = self.channels.get(name)
        if chan is None:
            self.require_valid_channel_name(name)
            chan = self.channels[name] = _Channel(self.get_capacity(name))
        return chan

    async def send(self, channel: str, message: dict) -> None:
        chan = self.channels.get(channel)
        if chan is None:
            assert isinstance(message, dict), "message is not a dict"
            chan = self._channel(channel)
        waiters = chan.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(message)
                return
        if chan.messages is None:
            chan.messages = collections.deque()
        elif len(chan.messages) >= chan.capacity:
            raise ChannelFull(channel)
        chan.messages.append((time.time() + self.expiry, message))

    async def receive(self, channel: str) -> dict:
        self._maybe_sweep()
        chan = self._channel(channel)
        messages = chan.messages
        now = time.time()
        while messages:
            expires, message = messages.popleft()
            if expires >= now:
                if chan.idle():
                    self.channels.pop(channel, None)
                return message
        waiter = asyncio.get_running_loop().create_future()
        if chan.waiters is None:
            chan.waiters = collections.deque()
        chan.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as our task was cancelled: keep it for the next receive.
                if chan.messages is None:
                    chan.messages = collections.deque()
                chan.messages.appendleft((time.time() + self.expiry, waiter.result()))
            elif chan.waiters is not None and waiter in chan.waiters:
                chan.waiters.remove(waiter)
            raise
        finally:
            if chan.idle() and self.channels.get(channel) is chan:
                del self.channels[channel]

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        self._maybe_sweep()
        for channel in list(self.groups.get(group, {})):
            try:
                await self.send(channel, message)
            except ChannelFull:
                pass

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            self._clean_expired()

    def _clean_expired(self) -> None:
        now = time.time()
        for name, chan in list(self.channels.items()):
            messages = chan.messages
            expired = False
            while messages and messages[0][0] < now:
                messages.popleft()
                expired = True
            if expired:
                self._remove_from_groups(name)
            if chan.idle():
                self.channels.pop(name, None)
        timeout = int(now) - self.group_expiry
        for members in self.groups.values():
            for name, joined in list(members.items()):
                if joined and joined < timeout:
                    members.pop(name, None)
