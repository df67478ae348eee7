"""Issue 12: audit records are written within AUDIT_FLUSH_INTERVAL of the call (not at the
next 30 s housekeeping), so a killed process loses at most that much; in strict mode a
call is answered only once its record is committed."""

from __future__ import annotations

import json
import signal

import pytest
from django.test import override_settings

from bridge_app.calls import proxy
from bridge_app.observability import audit
from tests.support.live import wait_for
from tests.test_audit import empty_buffer, finished_call  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e


def _request_ids(bridge) -> set[str]:
    out = bridge.manage("shell", "-c", "import json; from bridge_app.models import CallRecord as C; "
                                       "print(json.dumps(list(C.objects.values_list('request_id', flat=True))))")
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _calls(site, prefix: str, n: int) -> set[str]:
    ids = {f"{prefix}-{i}" for i in range(n)}
    with site.bridge.client(site.token) as c:
        for rid in sorted(ids):
            assert c.get(f"/{site.edge}/echo/ping", headers={"X-Request-ID": rid}).status_code == 200
    return ids


def test_records_are_written_soon_after_the_call_and_survive_a_kill(edge_setup):
    # The housekeeping chore (every 30 s) would not write them within the wait below.
    site = edge_setup()
    ids = _calls(site, "soon", 5)
    wait_for(lambda: ids <= _request_ids(site.bridge), 15, interval=0.5, what="records written by the timer")
    site.bridge.stop(signal.SIGKILL)
    assert ids <= _request_ids(site.bridge)


def test_strict_mode_answers_only_once_the_record_is_committed(bridge_factory, agent_factory, unique_name):
    # A flush interval of an hour: only strict mode can have written the records.
    bridge = bridge_factory(env={"RADICAL_AUDIT_STRICT": "1", "RADICAL_AUDIT_FLUSH_INTERVAL": "3600"})
    seeded = bridge.seed(users=["olga"], api_tokens=["olga"], edge_tokens=[(unique_name, "olga")])
    token = seeded["api"]["olga"]
    agent_factory(bridge, seeded["edge"][unique_name], plugins="tests.plugins.echo:EchoPlugin")
    wait_for(lambda: bridge.edge_online(token, unique_name), 20, what="edge online")
    with bridge.client(token) as c:
        assert c.get(f"/{unique_name}/echo/ping", headers={"X-Request-ID": "strict-ok"}).status_code == 200
        assert c.get(f"/{unique_name}/echo/nope", headers={"X-Request-ID": "strict-404"}).status_code == 404
        assert c.get(f"/{unique_name}/echo/bytes/300000", headers={"X-Request-ID": "strict-big"}).status_code == 200
    bridge.stop(signal.SIGKILL)  # nothing left to flush: every answered call is on disk
    assert {"strict-ok", "strict-404", "strict-big"} <= _request_ids(bridge)


async def test_strict_mode_refuses_to_answer_when_the_record_cannot_be_written(monkeypatch, empty_buffer):  # noqa: F811
    async def database_down(rows, token_ids):
        raise RuntimeError("database is down")

    monkeypatch.setattr(audit, "_write_async", database_down)
    monkeypatch.setattr(proxy, "answer_gates", [audit.call_answering])
    info = finished_call(1)
    refused = await proxy.gate_answer(info)
    assert refused is not None and (refused.status, refused.error) == (503, "audit_unavailable")
    assert (info.status, info.error, info.audited) == (503, "audit_unavailable", False)
    audit.call_observed(info)  # the refusal itself goes to the buffer
    assert [row[-1] for row in audit.buffer.rows] == ["req-1"]


async def test_strict_writes_share_one_transaction_per_batch(monkeypatch, empty_buffer):  # noqa: F811
    import asyncio

    batches = []

    async def write(rows, token_ids):
        batches.append(len(rows))
        await asyncio.sleep(0.01)
        return len(rows)

    monkeypatch.setattr(audit, "_write_async", write)
    infos = [finished_call(i) for i in range(20)]
    await asyncio.gather(*(audit.call_answering(info) for info in infos))
    assert sum(batches) == 20 and len(batches) < 20  # group commit
    assert all(info.audited for info in infos)
    for info in infos:
        audit.call_observed(info)
    assert audit.buffer.rows == []  # recorded once, not twice


@override_settings(RADICAL_EDGE={"AUDIT_FLUSH_INTERVAL": 0.05})
@pytest.mark.django_db(transaction=True)
async def test_the_timer_writes_a_lone_record_without_a_full_batch(empty_buffer):  # noqa: F811
    import asyncio

    from asgiref.sync import sync_to_async

    from bridge_app.models import CallRecord

    audit.call_observed(finished_call(7))
    for _ in range(200):
        await asyncio.sleep(0.05)
        if await sync_to_async(CallRecord.objects.filter(request_id="req-7").exists)():
            break
    assert await sync_to_async(CallRecord.objects.filter(request_id="req-7").exists)()
    assert audit.buffer.rows == []
