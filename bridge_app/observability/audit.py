"""The audit trail of proxied calls, written off the request path.

The proxy tells :data:`proxy.call_observers` about every finished call. :func:`call_observed`
turns that into a tuple appended to an in-process buffer: no database, no thread hop, no
allocation beyond the tuple. The buffer is written with one ``bulk_create`` per batch:

* every HOUSEKEEPING_INTERVAL seconds by a per-process chore (``hooks.register_chore``);
* as soon as it holds ``AUDIT_FLUSH_SIZE`` records (a background task, never awaited by
  the request that filled it);
* when the process shuts down (:func:`audit_flush`, called from the ASGI lifespan).

Every text a caller chose (edge, plugin and route of the path) is made storable before it
is buffered (``services.storable_text``), and a batch the database still refuses is written
record by record, dropping (and counting) only a record refused alone: one bad record never
holds up the trail. If the database is unreachable, or slower than the calls arrive, the
records wait in the buffer; past ``AUDIT_BUFFER_MAX`` records are dropped (counted in
``radical_edge_audit_dropped_total`` and the log) rather than letting an outage or an
overload grow memory without bound. A flush that leaves a full batch behind starts the
next one at once.

Tokens seen in use (``directory.used_tokens``) are written back by the same chore.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

from channels.db import database_sync_to_async

from edge_agent.backoff import backoff_delay

from ..calls.errors import ProxyError
from ..calls.proxy import CallInfo
from ..conf import edge_settings
from ..core import hooks
from ..core.directory import directory
from ..domain.services import storable_text
from . import metrics

log = logging.getLogger(__name__)
# Longest wait between attempts to write the buffer while the database fails (it was 30 s:
# the soak lost half a minute of records of a process killed after PostgreSQL came back).
AUDIT_RETRY_MAX = 2.0

# (at, uid, username, token_id, edge, plugin, method, path, status, duration_ms, bytes_in, bytes_out, client,
#  request_id)
Row = tuple[Any, ...]


class AuditBuffer:
    """Records waiting to be written. Appends and swaps are atomic under the GIL, so the
    proxy (event loop) and a flush (worker thread) never need a lock."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.dropped = 0
        self.unstorable = 0  # records the database refused even when written alone
        self.failures = 0  # consecutive failed writes (the timer backs off)
        self._flushing: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def add(self, row: Row) -> None:
        if not self.rows:
            self.arm_timer()
        limit = edge_settings.AUDIT_BUFFER_MAX
        if len(self.rows) >= limit:
            # The newest records win; the oldest tenth goes at once, so that a full buffer
            # costs one slice per limit/10 calls, not a list shift per call.
            excess = len(self.rows) - limit + max(1, limit // 10)
            del self.rows[:excess]
            self._drop(excess)
        self.rows.append(row)
        if len(self.rows) >= edge_settings.AUDIT_FLUSH_SIZE:
            self._flush_soon()

    def _drop(self, n: int) -> None:
        # A line for the first dropped record and then for every 10,000th, not one per call.
        if not self.dropped or self.dropped // 10_000 != (self.dropped + n) // 10_000:
            log.warning("audit buffer full (%d records): dropping records; database unreachable or too slow?",
                        len(self.rows))
        self.dropped += n
        metrics.AUDIT_DROPPED.inc(n)

    def take(self) -> list[Row]:
        rows, self.rows = self.rows, []
        return rows

    def put_back(self, rows: list[Row]) -> None:
        """Return rows whose write failed, keeping at most AUDIT_BUFFER_MAX (newest win)."""
        merged = rows + self.rows
        excess = len(merged) - edge_settings.AUDIT_BUFFER_MAX
        if excess > 0:
            self._drop(excess)
            merged = merged[excess:]
        self.rows = merged

    def arm_timer(self) -> None:
        """Write what is buffered within AUDIT_FLUSH_INTERVAL seconds (longer after failed
        writes, at most AUDIT_RETRY_MAX: a process killed just after the database came back
        loses what it buffered since that moment, so retries stay frequent). One timer per
        batch, not per call."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on an event loop: the periodic chore will write them
        if self._timer is not None and self._timer_loop is loop and not self._timer.cancelled():
            return  # (a timer of an event loop that ended never fires: replace it)
        delay = backoff_delay(min(self.failures, 10), base=edge_settings.AUDIT_FLUSH_INTERVAL, cap=AUDIT_RETRY_MAX)
        self._timer, self._timer_loop = loop.call_later(delay, self._timer_fired), loop

    def _timer_fired(self) -> None:
        self._timer = None
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flushing is not None and not self._flushing.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on an event loop: the periodic chore will write them
        self._flushing = loop.create_task(audit_flush(), name="audit-flush")


buffer = AuditBuffer()


def _row(info: CallInfo) -> Row:
    principal = info.principal
    target = info.target
    # The path is the caller's, refused or not: made storable here, so that no record in
    # the buffer can be refused by the database (a NUL once stopped the whole trail).
    return (
        time.time(),
        principal.user_id if principal is not None else None,
        principal.username if principal is not None else "",
        principal.token_id if principal is not None else None,
        storable_text(target.edge, 63) if target is not None else "",
        storable_text(target.plugin, 100) if target is not None else "",
        storable_text(info.method, 10),
        storable_text(target.route, 500) if target is not None else "",
        info.status,
        (time.monotonic() - info.started) * 1000.0,
        info.bytes_in,
        info.bytes_out,
        storable_text(info.client, 200),
        info.request_id,
    )


def call_observed(info: CallInfo) -> None:
    """``proxy.call_observers`` hook: remember one finished call (cheap, never raises)."""
    if not info.audited:
        buffer.add(_row(info))


class StrictWriter:
    """Strict mode's group commit: records of calls about to be answered are written
    together, one transaction per batch (the calls that arrived while the previous batch
    was being written), and each call waits for its batch to commit."""

    def __init__(self) -> None:
        self.pending: list[tuple[Row, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def write(self, row: Row) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.pending.append((row, done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="audit-strict")
        await done

    async def _run(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                await _write_async([row for row, _ in batch], [])
            except Exception as exc:
                log.warning("strict audit: could not write %d records: %s", len(batch), exc)
                outcome: BaseException | None = exc
            else:
                outcome = None
            for _, done in batch:
                if not done.done():
                    done.set_result(None) if outcome is None else done.set_exception(outcome)


strict_writer = StrictWriter()


async def call_answering(info: CallInfo) -> None:
    """``proxy.answer_gates`` hook of strict mode (``AUDIT_STRICT``): the call's record is
    written, in a committed transaction, before the caller gets any answer. If it cannot
    be, the caller gets ``503 audit_unavailable`` instead (whose record is buffered as
    usual); note that the edge may have acted on the call already. A streamed answer is
    recorded before its body is sent, with 0 bytes out."""
    try:
        await strict_writer.write(_row(info))
    except Exception:
        raise ProxyError(503, "audit_unavailable",
                         "the audit trail cannot be written, so the call is not answered; retry shortly") from None
    info.audited = True


def _record(row: Row) -> Row:
    (at, uid, username, token_id, edge, plugin, method, path, status, duration, bytes_in, bytes_out,
     client, request_id) = row
    return (datetime.fromtimestamp(at, tz=timezone.utc), uid, username, token_id, edge, plugin, method, path,
            min(max(status, 0), 32767), round(duration, 3), bytes_in, bytes_out, request_id, client)


def _repaired(record: Row) -> Row:
    """A record the database refused, with every text made storable once more."""
    return tuple(storable_text(value) if isinstance(value, str) else value for value in record)


def _write(rows: list[Row], token_ids: list[int]) -> int:
    """Write ``rows`` (a batch the database refuses is written record by record; see
    ``services.rows_write_isolated``) and touch the tokens; returns how many were written.
    Raises only the errors after which the same rows may be written later."""
    from ..domain import services
    from ..models import ApiToken

    results, dropped = services.rows_write_isolated(
        write=lambda records: services.call_records_write(rows=records),
        rows=[_record(row) for row in rows], repair=_repaired, what="audit records")
    if dropped:
        buffer.unstorable += dropped
        metrics.AUDIT_UNSTORABLE.inc(dropped)
    services.tokens_touch(model=ApiToken, ids=token_ids)
    return sum(results)


# Not thread-sensitive: a batch write must not queue behind (or hold up) the consumers' ORM
# calls, which all share the one thread-sensitive executor.
_write_async = database_sync_to_async(_write, thread_sensitive=False)


async def audit_flush() -> int:
    """Write every buffered record (and token last-used times) now; returns how many
    records were written. On failure the records go back to the buffer. While a write was
    under way, the calls of a busy bridge may have filled another batch: it is written next."""
    written = 0
    try:
        while True:
            rows = buffer.take()
            token_ids = directory.take_used_tokens()
            if not rows and not token_ids:
                return written
            try:
                written += await _write_async(rows, token_ids)
            except Exception:
                buffer.failures += 1
                log.warning("could not write %d audit records; will retry", len(rows), exc_info=buffer.failures == 1)
                buffer.put_back(rows)
                directory.used_tokens.update(token_ids)
                return written
            buffer.failures = 0
            if len(buffer.rows) < edge_settings.AUDIT_FLUSH_SIZE:
                return written
    finally:
        if buffer.rows:
            buffer.arm_timer()  # what arrived meanwhile (or failed) is written next


def audit_flush_sync() -> int:
    """:func:`audit_flush` for synchronous code (management commands, tests)."""
    rows = buffer.take()
    token_ids = directory.take_used_tokens()
    if not rows and not token_ids:
        return 0
    return _write(rows, token_ids)


def install() -> None:
    """Hook the audit trail into the proxy and the per-process chores (idempotent)."""
    if call_observed not in hooks.call_observers:
        hooks.call_observers.append(call_observed)
        hooks.register_chore(audit_flush)
    if edge_settings.AUDIT_STRICT and call_answering not in hooks.answer_gates:
        hooks.answer_gates.append(call_answering)
