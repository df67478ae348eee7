"""``task_status`` events, batched: 10,000 tasks finishing together must not become
10,000 frames on the bridge's socket.

State changes of one session are collected for ``interval`` seconds (or until
``max_tasks`` tasks or ``max_bytes`` of output piled up) and leave as one event::

    {"sid": "...", "tasks": [{"uid", "name", "state", "exit_code", "stdout", "stderr",
                               "return_value", "error", "truncated"}, ...]}

Changes of the same task within one batch are coalesced into the latest: a task that
started and finished within the window is reported once, with its final state. Final
states are always delivered.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

DEFAULT_INTERVAL = 0.1
DEFAULT_MAX_TASKS = 500
# Keeps an event well under the 1 MB that channel layers and WebSocket peers accept.
DEFAULT_MAX_BYTES = 256 * 1024


class StatusBatcher:
    """Collects task updates and hands them to ``emit`` as batches. Call :meth:`add` on
    the event loop thread (other threads are handed over to it)."""

    def __init__(self, emit: Callable[[list[dict[str, Any]]], None], *, interval: float = DEFAULT_INTERVAL,
                 max_tasks: int = DEFAULT_MAX_TASKS, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._emit = emit
        self.interval = interval
        self.max_tasks = max(1, max_tasks)
        self.max_bytes = max_bytes
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._pending: dict[str, dict[str, Any]] = {}
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self.events_emitted = 0
        self.updates = 0

    def add(self, uid: str, entry: dict[str, Any], size: int) -> None:
        """Queue ``entry`` (the task's latest state) for the next event."""
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self.add, uid, entry, size)
            return
        self.updates += 1
        self._pending.pop(uid, None)  # re-insert: the batch lists tasks in order of their last change
        self._pending[uid] = entry
        self._bytes += size
        if len(self._pending) >= self.max_tasks or self._bytes >= self.max_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Emit what is pending now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch = list(self._pending.values())
        self._pending = {}
        self._bytes = 0
        self.events_emitted += 1
        self._emit(batch)

    def close(self) -> None:
        self.flush()
