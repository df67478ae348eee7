"""Findings 2, 3, 6 and 7 of the attack review (issue 20): input the database refuses (NUL,
lone surrogates) must not stop the audit trail or the events, an agent must not flood the
event store, and an agent's impossible HTTP status must not crash the caller's answer."""

from __future__ import annotations

import json

import httpx
import pytest

from bridge_app.domain import services
from tests.support.live import ModuleSite, wait_for

from .rogue import RogueAgent, response

pytestmark = pytest.mark.e2e


def _rows(bridge, code: str) -> list:
    """Run ``code`` (which must print one JSON value last) in the bridge's Django."""
    return json.loads(bridge.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


def _call_records(bridge) -> dict[str, list]:
    return {r[0]: r[1:] for r in _rows(bridge, (
        "import json; from bridge_app.models import CallRecord as C; "
        "print(json.dumps(list(C.objects.values_list('request_id', 'status', 'edge', 'path'))))"))}


def _notifications(bridge, edge: str) -> list:
    return _rows(bridge, (
        "import json; from bridge_app.models import EventRecord as E; "
        f"print(json.dumps(list(E.objects.filter(edge={edge!r}, kind='notification')"
        ".order_by('id').values_list('plugin', 'topic', 'data'))))"))


def _site(bridge, edge: str, **rogue):
    seeded = bridge.seed(users=["olga"], api_tokens=["olga"], edge_tokens=[(edge, "olga")])
    agent = RogueAgent(bridge.url, seeded["edge"][edge], **rogue).start()
    assert agent.welcome["type"] == "welcome", agent.welcome
    wait_for(lambda: bridge.edge_online(seeded["api"]["olga"], edge), 20, what="rogue edge online")
    return seeded["api"]["olga"], agent


@pytest.mark.postgres
def test_a_nul_in_a_path_does_not_stop_the_audit_trail(bridge_factory, unique_name):
    """PostgreSQL refuses NUL in text: one such path once made every later batch fail and
    be retried forever, and the records were lost at shutdown. An invalid token is enough
    (refused calls are audited)."""
    bridge = bridge_factory("scaled")
    token, agent = _site(bridge, unique_name, answer=lambda f: response(f, 200))
    with httpx.Client(base_url=bridge.url, timeout=20) as c:
        bad = c.get(f"/{unique_name}/rogue/pi%00ng", headers={"Authorization": "Bearer nope", "X-Request-ID": "nul-1"})
        assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
        auth = {"Authorization": f"Bearer {token}"}
        assert c.get(f"/{unique_name}%00/rogue/ping", headers={**auth, "X-Request-ID": "nul-2"}).status_code == 404
        assert c.get(f"/{unique_name}/rogue/ping", headers={**auth, "X-Request-ID": "good-1"}).status_code == 200
    agent.stop()
    bridge.stop()  # SIGTERM: the audit buffer is flushed at shutdown
    records = _call_records(bridge)
    assert records["good-1"] == [200, unique_name, "ping"]
    assert records["nul-1"] == [401, unique_name, "pi\ufffdng"]
    assert records["nul-2"] == [404, unique_name + "\ufffd", "ping"]


@pytest.mark.postgres
def test_an_event_with_a_nul_in_its_names_does_not_halt_the_other_events(bridge_factory, unique_name):
    bridge = bridge_factory("scaled")
    _, agent = _site(bridge, unique_name)
    agent.send({"type": "event", "plugin": "rog\x00ue", "topic": "ti\x00ck", "data": {"i": -1, "s": "a\x00b"}})
    for i in range(3):
        agent.send({"type": "event", "plugin": "rogue", "topic": "tick", "data": {"i": i}})
    rows = wait_for(lambda: (r := _notifications(bridge, unique_name)) and len(r) == 4 and r, 30, interval=0.5,
                    what="all four events stored")
    assert rows[0][:2] == ["rog\ufffdue", "ti\ufffdck"]
    assert rows[0][2] == {"i": -1, "s": "a\ufffdb"}
    assert [r[2]["i"] for r in rows[1:]] == [0, 1, 2]
    agent.stop()


def test_an_agent_over_its_event_rate_loses_the_excess_and_says_how_much(bridge_factory, unique_name):
    bridge = bridge_factory(env={"RADICAL_EVENTS_RATE_PER_EDGE": "50", "RADICAL_EVENTS_BURST_PER_EDGE": "200"})
    _, agent = _site(bridge, unique_name)
    sent = 3000
    agent.send_many([json.dumps({"type": "event", "plugin": "rogue", "topic": "tick", "data": {"i": i}})
                     for i in range(sent)])

    def accounted():
        rows = _notifications(bridge, unique_name)
        ticks = [r[2]["i"] for r in rows if r[1] == "tick"]
        dropped = sum(r[2]["dropped"] for r in rows if r[:2] == ["bridge", "events_dropped"])
        return (ticks, dropped) if len(ticks) + dropped == sent else None

    ticks, dropped = wait_for(accounted, 30, interval=0.5, what="every event stored or counted as dropped")
    assert 200 <= len(ticks) < sent // 2 and dropped > sent // 2
    assert ticks == sorted(ticks) and ticks[:200] == list(range(200))  # the burst passes in order
    metrics = httpx.get(f"{bridge.url}/metrics").text
    assert f'radical_edge_events_dropped_total{{reason="rate"}} {float(dropped)}' in metrics
    agent.stop()


@pytest.fixture(scope="module")
def rogue_edge(tmp_path_factory, sqlite_template, request):
    """One bridge and one rogue edge for every impossible status: each case sets what the
    agent answers (a bridge and its manage.py seeding per case cost 5 to 10 s each)."""
    site = ModuleSite(request, tmp_path_factory.mktemp("rogue"), template=sqlite_template, users=["olga"],
                      api_tokens=["olga"], edge_tokens=[("rogue-status", "olga")])
    agent = RogueAgent(site.url, site.seeded["edge"]["rogue-status"]).start()
    try:
        assert agent.welcome["type"] == "welcome", agent.welcome
        site.wait_online("rogue-status", "olga")
        yield site, agent
    finally:
        agent.stop()
        site.close()


@pytest.mark.parametrize("status", [0, 99, 101, 600, 1000, -5])
def test_an_impossible_status_from_an_agent_is_a_502(rogue_edge, status):
    site, agent = rogue_edge
    agent.answer = lambda f: response(f, status)
    with site.api("olga") as c:
        answer = c.get("/rogue-status/rogue/ping")
        assert answer.status_code == 502
        assert answer.json()["error"] == "bad_agent_response" and str(status) in answer.json()["detail"]
        # The connection to the client survived, and the edge still answers good statuses.
        agent.answer = lambda f: response(f, 204, "")
        assert c.get("/rogue-status/rogue/ping").status_code == 204


def test_rows_write_isolated_keeps_the_good_rows_and_retries_nothing_forever():
    """The unit under both writers: one refused row costs itself only."""
    from django.db import DataError, OperationalError

    def write(rows):
        if any("\x00" in r for r in rows):
            raise DataError("NUL")
        return list(rows)

    written, dropped = services.rows_write_isolated(
        write=write, rows=["a", "b\x00", "c"], repair=lambda r: r.replace("\x00", "?"), what="rows")
    assert written == [["a"], ["b?"], ["c"]] and dropped == 0
    written, dropped = services.rows_write_isolated(write=write, rows=["a", "b\x00"], repair=lambda r: r, what="rows")
    assert written == [["a"]] and dropped == 1

    def unreachable(rows):
        raise OperationalError("database is restarting")

    with pytest.raises(OperationalError):  # the caller keeps the rows for later
        services.rows_write_isolated(write=unreachable, rows=["a"], repair=lambda r: r, what="rows")


def test_storable_text_replaces_only_what_databases_refuse():
    assert services.storable_text("plain/path") == "plain/path"
    assert services.storable_text("a\x00b\ud800c", 10) == "a\ufffdb\ufffd\ufffd\ufffdc"
    assert services.storable_text("é" * 5, 3) == "ééé"
