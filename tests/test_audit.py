"""The audit trail: call records are buffered off the request path and written in
batches; admin actions are recorded by the services; old rows are pruned."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from bridge_app.calls.proxy import CallInfo, ProxyTarget, call_observers
from bridge_app.core.directory import Principal
from bridge_app.domain import services
from bridge_app.models import ActionRecord, CallRecord
from bridge_app.observability import audit

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_buffer():
    audit.buffer.take()
    yield
    audit.buffer.take()


def finished_call(i: int = 0, *, status: int = 200) -> CallInfo:
    info = CallInfo(f"req-{i}", Principal(user_id=7, username="uma", token_id=3), ProxyTarget("hpc1", "jobs", "st"),
                    "GET")
    info.status, info.bytes_in, info.bytes_out = status, 10, 2000
    return info


def test_the_observer_is_installed_and_costs_no_database_work(django_assert_num_queries):
    assert audit.call_observed in call_observers
    with django_assert_num_queries(0):
        for i in range(100):
            audit.call_observed(finished_call(i))
    assert len(audit.buffer.rows) == 100


def test_a_flush_writes_one_batch_with_every_field():
    audit.call_observed(finished_call(1))
    anonymous = CallInfo("req-2", None, ProxyTarget("hpc1", "jobs", "st"), "POST")
    anonymous.status = 401
    audit.call_observed(anonymous)
    assert audit.audit_flush_sync() == 2
    first, second = CallRecord.objects.order_by("id")
    assert (first.uid, first.username, first.token_id, first.edge, first.plugin, first.method, first.path,
            first.status, first.bytes_in, first.bytes_out, first.request_id) == (
        7, "uma", 3, "hpc1", "jobs", "GET", "st", 200, 10, 2000, "req-1")
    assert first.duration_ms >= 0 and abs((timezone.now() - first.at).total_seconds()) < 60
    assert (second.uid, second.username, second.status) == (None, "", 401)
    assert audit.buffer.rows == []


async def test_a_full_buffer_is_written_in_the_background():
    with override_settings(RADICAL_EDGE={"AUDIT_FLUSH_SIZE": 10}):
        for i in range(10):
            audit.call_observed(finished_call(i))
        task = audit.buffer._flushing
        assert task is not None  # scheduled, not awaited by the caller
        await task
    from asgiref.sync import sync_to_async

    assert await sync_to_async(CallRecord.objects.count)() == 10


async def test_a_failed_write_keeps_the_records_up_to_the_limit(monkeypatch):
    async def database_down(rows, token_ids):
        raise RuntimeError("database is down")

    monkeypatch.setattr(audit, "_write_async", database_down)
    with override_settings(RADICAL_EDGE={"AUDIT_BUFFER_MAX": 5, "AUDIT_FLUSH_SIZE": 1000}):
        for i in range(8):
            audit.call_observed(finished_call(i))
        assert await audit.audit_flush() == 0
        assert [row[-1] for row in audit.buffer.rows] == ["req-3", "req-4", "req-5", "req-6", "req-7"]
        assert audit.buffer.dropped >= 3


def test_an_overloaded_buffer_stays_bounded_and_keeps_the_newest(monkeypatch):
    """Calls arriving faster than records are written (or a database away) must not grow
    memory without bound: past AUDIT_BUFFER_MAX the oldest records go, counted."""
    from bridge_app.observability import metrics

    monkeypatch.setattr(audit.buffer, "_flush_soon", lambda: None)  # the writer never catches up
    dropped_before = audit.buffer.dropped
    metric_before = metrics.AUDIT_DROPPED._value.get()
    with override_settings(RADICAL_EDGE={"AUDIT_BUFFER_MAX": 100, "AUDIT_FLUSH_SIZE": 10}):
        for i in range(1000):
            audit.call_observed(finished_call(i))
            assert len(audit.buffer.rows) <= 100
    kept = [row[-1] for row in audit.buffer.rows]
    assert kept[-1] == "req-999" and kept == [f"req-{i}" for i in range(1000 - len(kept), 1000)]
    assert audit.buffer.dropped - dropped_before == 1000 - len(kept)
    assert metrics.AUDIT_DROPPED._value.get() - metric_before == 1000 - len(kept)


async def test_a_flush_goes_on_while_calls_keep_filling_batches(monkeypatch):
    """A busy bridge fills the next batch while one is being written: the flush writes it
    too, instead of leaving it for the next call or the periodic chore."""
    real_write = audit._write_async
    batches = []

    async def write_while_calls_arrive(rows, token_ids):
        batches.append(len(rows))
        if len(batches) < 3:
            for i in range(10):
                audit.call_observed(finished_call(100 * len(batches) + i))
        return await real_write(rows, token_ids)

    monkeypatch.setattr(audit, "_write_async", write_while_calls_arrive)
    monkeypatch.setattr(audit.buffer, "_flush_soon", lambda: None)
    with override_settings(RADICAL_EDGE={"AUDIT_FLUSH_SIZE": 10}):
        for i in range(10):
            audit.call_observed(finished_call(i))
        assert await audit.audit_flush() == 30
    assert batches == [10, 10, 10]
    assert audit.buffer.rows == []
    from asgiref.sync import sync_to_async

    assert await sync_to_async(CallRecord.objects.count)() == 30


def test_large_batches_are_written_in_several_statements(monkeypatch):
    monkeypatch.setattr(services, "CALL_RECORD_ROWS", 400)
    for i in range(1001):
        audit.call_observed(finished_call(i, status=200 + i % 300))
    assert audit.audit_flush_sync() == 1001
    stored = list(CallRecord.objects.order_by("id").values_list("request_id", "status", "username", "edge"))
    assert stored == [(f"req-{i}", 200 + i % 300, "uma", "hpc1") for i in range(1001)]


@pytest.mark.e2e
def test_call_records_are_written_to_postgresql(bridge_factory):
    """The multi-row INSERT as PostgreSQL takes it (types, placeholders, several statements)."""
    bridge = bridge_factory("scaled", start=False)
    code = (
        "import time; from bridge_app.domain import services; from bridge_app.models import CallRecord as C; "
        "from datetime import datetime, timezone; "
        "services.CALL_RECORD_ROWS = 7; "
        "rows = [(datetime.fromtimestamp(time.time(), tz=timezone.utc), None if i % 2 else 5, 'pg-user', None, "
        "'pg-edge', 'echo', 'GET', 'p/' + str(i), 200 + i, 1.25, i, 2 * i, 'pg-' + str(i)) for i in range(20)]; "
        "print(services.call_records_write(rows=rows)); "
        "print([(r.request_id, r.uid, r.path, r.status, r.bytes_out) for r in "
        "C.objects.filter(request_id__startswith='pg-').order_by('id')])"
    )
    out = bridge.manage("shell", "-c", code).stdout.strip().splitlines()
    assert out[-2] == "20"
    assert out[-1] == repr([(f"pg-{i}", None if i % 2 else 5, f"p/{i}", 200 + i, 2 * i) for i in range(20)])


def test_admin_actions_name_the_actor(django_user_model):
    olga = django_user_model.objects.create_user("olga")
    root = django_user_model.objects.create_superuser("root", password=None)
    token, _ = services.edge_token_create(name="hpc1", owner=olga, created_by=root)
    services.edge_token_revoke(token=token, actor=root)
    api, _ = services.api_token_create(user=olga, actor=olga)
    services.api_token_revoke(token=api, actor=olga)
    services.edge_suspend(edge=token.edge, actor=olga)
    services.edge_resume(edge=token.edge)  # the command line
    rows = list(ActionRecord.objects.order_by("at", "id").values_list("action", "actor_name", "edge"))
    assert rows == [("edge_token_issued", "root", "hpc1"), ("edge_token_revoked", "root", "hpc1"),
                    ("api_token_issued", "olga", ""), ("api_token_revoked", "olga", ""),
                    ("edge_suspended", "olga", "hpc1"), ("edge_resumed", "", "hpc1")]
    # Revoking twice is one action.
    services.edge_token_revoke(token=token, actor=root)
    assert ActionRecord.objects.filter(action="edge_token_revoked").count() == 1


def test_audit_prune_keeps_the_retention_window(capsys):
    now = timezone.now()
    for days in (1, 10, 100, 400):
        CallRecord.objects.create(at=now - timedelta(days=days), method="GET", status=200, duration_ms=1)
        ActionRecord.objects.create(at=now - timedelta(days=days), action="edge_suspended")
    call_command("audit_prune")  # defaults: 90 days of calls, 365 of actions
    assert sorted(CallRecord.objects.values_list("at", flat=True)) == sorted(
        [now - timedelta(days=10), now - timedelta(days=1)])
    assert ActionRecord.objects.count() == 3
    call_command("audit_prune", "--days", "5", "--action-days", "0")
    assert CallRecord.objects.count() == 1 and ActionRecord.objects.count() == 3
    assert "deleted 1 proxied-call records older than 5 days" in capsys.readouterr().out
