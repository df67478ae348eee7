"""Retry delays: one formula for every loop that waits longer after each failure.

Used by the agent's reconnects (:class:`Backoff`), the SDK's event stream resume, and on the
bridge by the notification worker (webhook and e-mail retries, failed passes), the event and
audit writers and the reply inbox. Free of Django and of I/O, so both sides import it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

# Beyond this many doublings every delay is at its cap anyway; stops float overflow.
_MAX_EXPONENT = 64


def backoff_delay(attempt: int, *, base: float, cap: float, factor: float = 2.0,
                  jitter: tuple[float, float] | None = None) -> float:
    """``base * factor ** attempt``, at most ``cap``; then, with ``jitter=(lo, hi)``,
    multiplied by a random factor in [lo, hi] so that many clients failing together do not
    retry in lock step. ``attempt`` 0 (or less) is the first retry and waits ``base``."""
    delay = min(cap, base * factor ** min(max(attempt, 0), _MAX_EXPONENT))
    if jitter is not None:
        delay *= random.uniform(*jitter)
    return delay


@dataclass
class Backoff:
    """Exponential backoff with jitter, fast at first and gentle in long outages.

    For the first ``fast_window`` seconds of an outage the delay never exceeds
    ``fast_cap``, so an agent is back within about a second of its bridge restarting
    (refused connections cost a bridge nothing); after that it grows to ``maximum``.
    Each delay is drawn from [ceiling/2, ceiling] so that a thousand agents cut off
    together do not come back in lock step.
    """

    initial: float = 0.25
    fast_cap: float = 1.0
    fast_window: float = 60.0
    maximum: float = 30.0
    factor: float = 2.0
    attempt: int = 0
    outage_started: float | None = None

    def next_delay(self, *, fast: bool = True) -> float:
        """The next wait. ``fast=False`` for failures that retrying soon cannot cure (an
        untrusted certificate): plain exponential growth, without the fast phase."""
        now = time.monotonic()
        if self.outage_started is None:
            self.outage_started = now
        cap = self.maximum
        if fast and now - self.outage_started < self.fast_window:
            cap = min(cap, self.fast_cap)
        delay = backoff_delay(self.attempt, base=self.initial, cap=cap, factor=self.factor, jitter=(0.5, 1.0))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
        self.outage_started = None
