"""channels-redis's core layer, with process channels that do not starve each other.

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

import uuid

from channels_redis.core import RedisChannelLayer

# Every process channel starts with this (the non-local name is it plus the client prefix).
PROCESS_CHANNELS = "proc."


class RedisCoreChannelLayer(RedisChannelLayer):
    async def new_channel(self, prefix: str = "specific.") -> str:
        return f"{PROCESS_CHANNELS}{self.client_prefix}!{prefix}{uuid.uuid4().hex}"
