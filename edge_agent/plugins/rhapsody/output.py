"""Bounded task output: a chatty task must not be able to exhaust the agent's memory.

Both helpers keep the head and the tail of the output (the start shows what ran, the end
usually shows why it failed) and put a marker where bytes were dropped.
"""

from __future__ import annotations


def truncation_marker(omitted: int, unit: str = "bytes") -> str:
    return f"\n[... {omitted} {unit} truncated ...]\n"


class BoundedOutput:
    """Collects a byte stream, keeping at most ``limit`` bytes (half head, half tail).

    Memory stays within ``limit`` plus one chunk, however much the stream produces.
    """

    __slots__ = ("head", "head_limit", "limit", "tail", "tail_limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = max(0, int(limit))
        self.head_limit = self.limit - self.limit // 2
        self.tail_limit = self.limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data and self.tail_limit:
            self.tail += data
            excess = len(self.tail) - self.tail_limit
            if excess > 0:
                del self.tail[:excess]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        """The kept output as text (undecodable bytes replaced), with a marker where
        bytes were dropped."""
        head = self.head.decode("utf-8", "replace")
        if not self.truncated:
            return head + self.tail.decode("utf-8", "replace")
        omitted = self.total - len(self.head) - len(self.tail)
        return head + truncation_marker(omitted) + self.tail.decode("utf-8", "replace")


def clip_text(text: str | None, limit: int) -> tuple[str | None, bool]:
    """``text`` cut to about ``limit`` characters (head and tail kept); and whether it was cut."""
    if text is None or len(text) <= limit:
        return text, False
    head = limit - limit // 2
    tail = limit // 2
    omitted = len(text) - head - tail
    return text[:head] + truncation_marker(omitted, "characters") + (text[-tail:] if tail else ""), True
