"""Batched writes use few distinct SQL statements whatever their batch sizes.

The database connections of a bridge process live as long as the process, and SQLite's
statement cache keeps one prepared statement per distinct SQL text (128 per connection):
batches of every size used to create hundreds of large statements, which showed as
SQLite's memory growing by ~2 MB per 1,000 edges joining and leaving (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
from django.db import connection

from bridge_app.domain import services
from bridge_app.domain.services import chunks, padded
from bridge_app.models import CallRecord, EventRecord
from bridge_app.streams import events

pytestmark = pytest.mark.django_db(transaction=True)


def test_padded_rounds_in_lists_up_to_a_power_of_two_with_distinct_values_no_row_has():
    assert padded([]) == []
    assert padded([7]) == [7]
    assert padded(["ab", "cd", "ef"]) == ["ab", "cd", "ef", " pad 0"]
    for n in range(1, 300):
        values = list(range(1, n + 1))
        out = padded(values)
        assert out[:n] == values and len(set(out)) == len(out)  # Django drops repeated values
        assert all(v < 0 for v in out[n:])  # ids are positive
        assert len(out) & (len(out) - 1) == 0 and len(out) < 2 * n


def test_chunks_cover_every_row_in_order_with_a_few_fixed_sizes():
    seen = set()
    for total in range(0, 2000):
        rows = list(range(total))
        parts = list(chunks(rows, 256))
        sizes = [len(part) for part in parts]
        assert sum(sizes) == total
        assert [row for part in parts for row in part] == rows
        seen.update(sizes)
    assert seen == {1, 2, 4, 8, 16, 32, 64, 128, 256}


@contextmanager
def statements():
    """The SQL texts executed meanwhile, with their placeholders (what a statement cache keys on)."""
    seen: set[str] = set()

    def record(execute, sql, params, many, context):
        seen.add(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


@contextmanager
def sqlite_insert_shapes():
    """How many rows each INSERT that SQLite ran meanwhile had (the audit writer uses
    sqlite3's own cursor, which Django's execute wrappers do not see; SQLite's trace shows
    statements with their values filled in, so a statement's shape is its row count)."""
    shapes: set[int] = set()
    connection.ensure_connection()
    raw = connection.connection

    def trace(sql: str) -> None:
        if sql.startswith("INSERT"):
            shapes.add(sql.count("), (") + 1)

    raw.set_trace_callback(trace)
    try:
        yield shapes
    finally:
        raw.set_trace_callback(None)


def test_audit_batches_of_any_size_use_at_most_nine_insert_statements():
    at = datetime.now(timezone.utc)
    with sqlite_insert_shapes() as shapes:
        for n in range(1, 300, 7):
            rows = [(at, 1, "u", 2, "e", "p", "GET", "r", 200, 1.0, 0, 0, f"req-{n}-{i}") for i in range(n)]
            assert services.call_records_write(rows=rows) == n
    assert shapes <= {1, 2, 4, 8, 16, 32, 64, 128, 256} and len(shapes) >= 2, shapes
    assert CallRecord.objects.count() == sum(range(1, 300, 7))


def test_event_batches_of_any_size_use_at_most_nine_insert_statements():
    now = time.time()
    with statements() as seen:
        for n in range(1, 300, 7):
            rows = [(events.NOTIFICATION, "e", "p", "t", None, {"i": i}, now) for i in range(n)]
            out = events._write(rows)
            assert [json["id"] for json in out] == sorted(json["id"] for json in out)
    inserts = {sql for sql in seen if sql.startswith("INSERT")}
    assert 1 <= len(inserts) <= 9
    assert EventRecord.objects.count() == sum(range(1, 300, 7))


def test_registration_batches_of_any_size_use_few_distinct_statements(django_user_model):
    owner = django_user_model.objects.create(username="shapes")
    tokens = [services.edge_token_create(name=f"shape-{i}", owner=owner)[1] for i in range(64)]
    hello = {"type": "hello", "protocol": 1, "agent_version": "t", "host": {"hostname": "h"},
             "plugins": [{"name": "sysinfo", "version": "1"}]}
    with statements() as seen:
        start = 0
        for n in range(1, 12):  # batches of 1 to 11 registrations, 66 in all (some twice)
            batch = [tokens[(start + i) % 64] for i in range(n)]
            start += n
            results = services.edges_register(
                requests=[services.RegisterRequest(t, f"chan-{n}-{i}", hello) for i, t in enumerate(batch)])
            assert all(isinstance(r, services.ConnectResult) for r in results)
    # Batch sizes 1..11 pad to 1, 2, 4, 8 and 16: a handful of shapes per query, not 11.
    assert 1 <= len({sql for sql in seen if '"digest" IN' in sql}) <= 5
    assert 1 <= len({sql for sql in seen if 'FROM "bridge_app_pluginregistration"' in sql}) <= 5
