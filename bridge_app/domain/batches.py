"""Statement shapes for batched database work: ``padded`` IN lists and ``chunks`` of rows.

A leaf module (no imports from the rest of the bridge), so that the caches of the hot path
(``directory.py``) can batch their reads without importing ``services.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# SQLite's (and psycopg's) statement cache keeps one prepared statement per distinct SQL
# text, up to 128 per connection, and the bridge's connections live as long as the process.
# Batches of every size from 1 to 1,000 made hundreds of distinct, large statements: a
# thousand edges joining and leaving grew SQLite's memory by about 2 MB a cycle until the
# caches were full. IN lists are padded to a power of two (what Hibernate's
# in_clause_parameter_padding does) and multi-row INSERTs use a few fixed sizes.


def padded(values: Iterable[Any]) -> list[Any]:
    """``values`` (ids or strings) as a list for an ``__in`` lookup, its length rounded up to
    a power of two with values no row has: negative numbers for ids (keys are positive),
    strings with a space for names and digests (neither may contain one). Django drops
    repeated values from IN lists, so the padding must be distinct."""
    out = list(values)
    missing = (1 << max(len(out) - 1, 0).bit_length()) - len(out) if out else 0
    if missing:
        if isinstance(out[0], str):
            out += [f" pad {i}" for i in range(missing)]
        else:
            out += [-1 - i for i in range(missing)]
    return out


def chunks(items: Sequence[T], largest: int = 256) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of ``largest`` (a power of two) while that many are
    left, then of the powers of two of the remainder, largest first: a handful of sizes,
    so a handful of statement shapes, whatever the batch size."""
    start, size = 0, largest
    while start < len(items):
        while len(items) - start < size:
            size //= 2
        yield items[start:start + size]
        start += size
