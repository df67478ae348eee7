"""Events inside one bridge process: buffered off the consumer's path, written in batches,
published with their database ids; streams that show each caller only what it may see,
replay after Last-Event-ID, and never send an event twice."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import DataError, OperationalError
from django.test import override_settings
from django.utils import timezone

from bridge_app.core.directory import Principal, directory
from bridge_app.domain import services
from bridge_app.models import EventRecord
from bridge_app.streams import events, sse
from bridge_app.streams.sse import EventStream, Filters, format_event, may_see
from edge_agent.client.events import SSEParser

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_state():
    channel_layers.backends.clear()  # the in-memory layer belongs to one event loop
    directory.invalidate("all", None)
    events.buffer.take()
    yield
    events.buffer.take()
    channel_layers.backends.clear()


@pytest.fixture
def no_flusher(monkeypatch):
    """Flush by hand: the test decides when a batch is written."""
    monkeypatch.setattr(events.buffer, "wake_flusher", lambda: None)


def notify(edge: str = "hpc1", i: int = 0, owner: int | None = None, topic: str = "tick") -> dict:
    return {"type": "event", "plugin": "echo", "topic": topic, "data": {"i": i}, "owner": owner, "seq": i,
            "ts": time.time()}


async def add(edge: str = "hpc1", n: int = 1, owner: int | None = None, start: int = 0) -> None:
    for i in range(start, start + n):
        await events.event_received(edge, notify(edge, i, owner))


def run_now(coro) -> None:
    """Run a coroutine that never waits, outside any event loop (so no flusher starts)."""
    with pytest.raises(StopIteration):
        coro.send(None)


# -- the writer --------------------------------------------------------------------------------


def test_recording_an_event_costs_no_database_work(django_assert_num_queries):
    with django_assert_num_queries(0):
        for i in range(100):
            run_now(events.event_received("hpc1", notify(i=i, owner=7)))
        run_now(events.topology_changed("hpc1", online=True))
    assert len(events.buffer.rows) == 101
    assert events.buffer.rows[0][:5] == ("notification", "hpc1", "echo", "tick", 7)


async def test_a_flush_writes_one_batch_then_publishes_it_with_the_database_ids(no_flusher):
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add("portal.edge.hpc1", listener)
    await layer.group_add("portal.topology", listener)
    await events.topology_changed("hpc1", online=False)
    await add(n=3, owner=7)
    assert await events.events_flush()

    first = await asyncio.wait_for(layer.receive(listener), 5)
    second = await asyncio.wait_for(layer.receive(listener), 5)
    assert first["type"] == second["type"] == "portal.events"
    assert [e["kind"] for e in first["events"]] == ["topology"]  # topology first
    ids = [e["id"] for e in first["events"] + second["events"]]
    rows = await sync_to_async(lambda: list(EventRecord.objects.order_by("id").values_list("id", "kind", "owner_uid",
                                                                                           "data")))()
    assert ids == [r[0] for r in rows] and ids == sorted(ids)
    assert [r[1:] for r in rows] == [("topology", None, {"online": False}), ("notification", 7, {"i": 0}),
                                     ("notification", 7, {"i": 1}), ("notification", 7, {"i": 2})]
    payload = json.loads(second["events"][1]["json"])
    assert payload == {"id": ids[2], "edge": "hpc1", "plugin": "echo", "topic": "tick", "data": {"i": 1},
                       "ts": payload["ts"]}


async def test_a_burst_is_written_in_few_batches_by_the_flusher():
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add("portal.edge.hpc1", listener)
    await add(n=2000, owner=1)
    received = 0
    messages = 0
    while received < 2000:
        message = await asyncio.wait_for(layer.receive(listener), 10)
        received += len(message["events"])
        messages += 1
    await events.buffer.stop_flusher()
    # A lone first event may go out alone; the burst behind it shares batches.
    assert messages <= 10
    assert await sync_to_async(EventRecord.objects.count)() == 2000


async def test_online_topology_names_the_edges_plugins(owner, no_flusher):
    await edge_with_plugins("hpc1", owner, ["sysinfo", "echo"])
    await events.topology_changed("hpc1", online=True)
    [published] = await sync_to_async(events.events_flush_sync)()
    assert json.loads(published["json"]) == {"id": published["id"], "edge": "hpc1", "online": True,
                                             "plugins": ["echo", "sysinfo"], "ts": json.loads(published["json"])["ts"]}


async def test_a_failed_write_keeps_the_events_for_the_next_flush(monkeypatch, no_flusher):
    await add(n=5)
    real = events._write_async

    async def down(rows):
        raise OperationalError("database is restarting")

    monkeypatch.setattr(events, "_write_async", down)
    assert not await events.events_flush()
    assert len(events.buffer.rows) == 5
    monkeypatch.setattr(events, "_write_async", real)
    assert await events.events_flush()
    assert await sync_to_async(EventRecord.objects.count)() == 5 and events.buffer.rows == []


async def test_an_event_the_database_refuses_does_not_hold_up_the_others(monkeypatch, no_flusher):
    await add(n=3)
    real = events._write

    def picky(rows):
        if any(row[5] == {"i": 1} for row in rows):
            raise DataError("unsupported Unicode escape sequence")
        return real(rows)

    monkeypatch.setattr(events, "_write", picky)
    monkeypatch.setattr(events, "_write_async", sync_to_async(events._write_isolated))
    assert await events.events_flush()
    data = await sync_to_async(lambda: list(EventRecord.objects.order_by("id").values_list("data", flat=True)))()
    assert data == [{"i": 0}, {"error": "unstorable_event"}, {"i": 2}]


def test_the_buffer_keeps_the_newest_events_when_the_database_stays_away():
    with override_settings(RADICAL_EDGE={"EVENTS_BUFFER_MAX": 10}):
        rows = [("notification", "hpc1", "echo", "tick", None, {"i": i}, 1.0) for i in range(8)]
        events.buffer.rows = rows[4:]
        events.buffer.put_back(rows[:4] + rows[:4])  # a failed batch of 8 goes back in front
        assert len(events.buffer.rows) == 10
        assert events.buffer.rows[-4:] == rows[4:]


def test_event_data_is_bounded_and_storable():
    with override_settings(RADICAL_EDGE={"EVENT_MAX_BYTES": 100}):
        assert json.loads(events.encode_data({"out": "x" * 200})) == {"error": "event_too_large", "size": 210,
                                                                      "limit": 100}
    assert json.loads(events.encode_data({"out": "a\0b"})) == {"out": "a\ufffdb"}  # jsonb refuses NUL
    assert events.encode_data({"line": "a\u2028b"}).count("\n") == 0


def test_messages_stay_small_and_topology_goes_first():
    def event(i, kind="notification", edge="a", size=100_000):
        return {"id": i, "kind": kind, "edge": edge, "plugin": "p", "topic": "t", "owner": None, "json": "x" * size}

    batch = [event(1), event(2), event(3), event(4, "topology", size=10), event(5, edge="b", size=10)]
    groups = [(group, [e["id"] for e in message["events"]]) for group, message in events._messages(batch)]
    assert groups == [("portal.topology", [4]), ("portal.edge.a", [1, 2]), ("portal.edge.a", [3]),
                      ("portal.edge.b", [5])]


def test_agent_timestamps_that_make_no_sense_are_replaced():
    for ts in (float("nan"), -1.0, 1e20, True, "yesterday"):
        run_now(events.event_received("hpc1", {**notify(), "ts": ts}))
    assert all(abs(row[6] - time.time()) < 60 for row in events.buffer.rows)


def test_events_prune_deletes_only_old_events():
    now = timezone.now()
    EventRecord.objects.bulk_create([
        EventRecord(at=now - timedelta(days=10), kind="notification", edge="hpc1"),
        EventRecord(at=now - timedelta(days=2), kind="notification", edge="hpc1"),
        EventRecord(at=now, kind="topology", edge="hpc1"),
    ])
    call_command("events_prune", "--days", "7")
    assert EventRecord.objects.count() == 2
    call_command("events_prune", "--days", "1")
    assert EventRecord.objects.count() == 1


# -- who sees what ----------------------------------------------------------------------------


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("olga")  # no password: hashing one is slow


@pytest.fixture
def people(django_user_model, owner):
    """The edge hpc1 (owned by olga), a user, a viewer, a user through a group, a stranger, an admin."""
    services.edge_token_create(name="hpc1", owner=owner)
    edge = services.edge_token_create(name="hpc2", owner=None)[0].edge
    hpc1 = owner.edges.get(name="hpc1")
    users = {name: django_user_model.objects.create_user(name) for name in ("uma", "vera", "gus", "stranger")}
    users["root"] = django_user_model.objects.create_superuser("root", password=None)
    services.grant_set(edge=hpc1, role="user", user=users["uma"])
    services.grant_set(edge=hpc1, role="viewer", user=users["vera"])
    team = Group.objects.create(name="team")
    users["gus"].groups.add(team)
    services.grant_set(edge=hpc1, role="user", group=team)
    services.grant_set(edge=edge, role="user", user=users["stranger"])  # another edge only
    users["olga"] = owner
    directory.invalidate("all", None)
    return {name: principal_of(user) for name, user in users.items()}


def principal_of(user) -> Principal:
    return Principal(user_id=user.pk, username=user.username, is_superuser=user.is_superuser,
                     group_ids=frozenset(user.groups.values_list("pk", flat=True)))


def test_may_see():
    p = Principal(user_id=5, username="u")
    assert may_see(p, "viewer", "topology", None)
    assert not may_see(p, None, "topology", None)
    assert may_see(p, "viewer", "notification", 5)  # their own, even as a viewer
    assert not may_see(p, "viewer", "notification", 6) and not may_see(p, "user", "notification", None)
    assert may_see(p, "owner", "notification", 6) and may_see(p, "admin", "notification", None)


def test_filters():
    assert Filters().wants("topology", "a", "", "")
    assert not Filters(plugin="psij").wants("topology", "a", "", "")  # a plugin filter leaves topology out
    assert Filters(edge="a", topic="job_status").wants("notification", "a", "psij", "job_status")
    assert not Filters(edge="a").wants("notification", "b", "psij", "job_status")


def write_mixed_events(people) -> dict[str, int]:
    """topology of hpc1 and hpc2, and notifications of hpc1 owned by each person."""
    rows = [("topology", "hpc1", "", "", None, {"online": True}, time.time()),
            ("topology", "hpc2", "", "", None, {"online": True}, time.time())]
    for name in ("olga", "uma", "vera", "gus", "stranger"):
        rows.append(("notification", "hpc1", "echo", "tick", people[name].user_id, {"by": name}, time.time()))
    rows.append(("notification", "hpc1", "echo", "tick", None, {"by": None}, time.time()))
    rows.append(("notification", "hpc2", "echo", "tick", people["stranger"].user_id, {"by": "stranger"}, time.time()))
    events.buffer.rows = rows
    return {"high": events.events_flush_sync()[-1]["id"]}


VISIBLE = {
    # topology edges, hpc1 notifications by, hpc2 notifications by
    "olga": ({"hpc1"}, {"olga", "uma", "vera", "gus", "stranger", None}, set()),
    "uma": ({"hpc1"}, {"uma"}, set()),
    "vera": ({"hpc1"}, {"vera"}, set()),
    "gus": ({"hpc1"}, {"gus"}, set()),
    "stranger": ({"hpc2"}, set(), {"stranger"}),
    "root": ({"hpc1", "hpc2"}, {"olga", "uma", "vera", "gus", "stranger", None}, {"stranger"}),
}


def seen(payloads: list[dict]) -> tuple[set, set, set]:
    topo = {p["edge"] for p in payloads if "online" in p}
    by1 = {p["data"]["by"] for p in payloads if p.get("edge") == "hpc1" and "data" in p}
    by2 = {p["data"]["by"] for p in payloads if p.get("edge") == "hpc2" and "data" in p}
    return topo, by1, by2


async def test_replay_shows_each_caller_only_what_it_may_see(people, no_flusher):
    marks = await sync_to_async(write_mixed_events)(people)
    for who, expected in VISIBLE.items():
        principal = people[who]
        roles = await sse.edge_roles_for(principal)
        page = await sync_to_async(sse.replay_page)(principal=principal, roles=roles, filters=Filters(), after=0,
                                                    upto=marks["high"])
        assert seen([json.loads(text) for _, _, text in page]) == expected, who


async def test_live_events_show_each_caller_only_what_it_may_see(people, no_flusher):
    published = await sync_to_async(write_mixed_events)(people)
    rows = await sync_to_async(lambda: list(EventRecord.objects.order_by("id")))()
    live = [{"id": r.id, "kind": r.kind, "edge": r.edge, "plugin": r.plugin, "topic": r.topic, "owner": r.owner_uid,
             "json": (events.topology_json(r.id, r.edge, r.data, 0.0) if r.kind == "topology" else
                      events.notification_json(r.id, r.edge, r.plugin, r.topic, json.dumps(r.data), 0.0))}
            for r in rows]
    assert published["high"] == rows[-1].id
    for who, expected in VISIBLE.items():
        stream = EventStream(people[who], Filters(), last_event_id=None, revalidate=None)
        stream.joined = {"hpc1", "hpc2"}  # as if following both; visibility is checked per event anyway
        text = await stream._render(live)
        assert seen([json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]) == expected, who


# -- a stream, in process ----------------------------------------------------------------------


async def edge_with_plugins(name, owner, plugins=("echo",)):
    def make():
        edge = services.edge_token_create(name=name, owner=owner)[0].edge
        for plugin in plugins:
            edge.plugins.create(name=plugin, version="1")

    await sync_to_async(make)()


async def next_chunk(body, timeout: float = 5.0) -> str:
    return (await asyncio.wait_for(body.__anext__(), timeout)).decode()


def parse(text: str) -> list:
    parser = SSEParser()
    return [(e.event, e.id, json.loads(e.data)) for e in parser.feed(text.encode())]


async def flush() -> None:
    assert await events.events_flush()


async def owner_stream(owner, **kwargs) -> EventStream:
    principal = await sync_to_async(principal_of)(owner)

    async def revalidate():
        return principal

    return EventStream(principal, kwargs.pop("filters", Filters()), revalidate=revalidate, **kwargs)


async def test_a_stream_replays_after_last_event_id_then_goes_live(owner, no_flusher):
    await edge_with_plugins("hpc1", owner)
    await add(n=5, owner=owner.pk)
    await flush()
    ids = await sync_to_async(lambda: list(EventRecord.objects.order_by("id").values_list("id", flat=True)))()
    stream = await owner_stream(owner, last_event_id=ids[1])
    body = stream.body()
    assert (await next_chunk(body)).startswith("retry: 3000\n")
    replayed = parse(await next_chunk(body))
    assert [(kind, int(i), data["data"]["i"]) for kind, i, data in replayed] == [
        ("notification", ids[k], k) for k in (2, 3, 4)]
    await add(n=2, owner=owner.pk, start=5)
    await flush()
    live = parse(await next_chunk(body))
    assert [data["data"]["i"] for _, _, data in live] == [5, 6]
    assert int(live[-1][1]) > ids[-1]
    await body.aclose()
    layer = get_channel_layer()
    assert not any(stream.channel in members for members in layer.groups.values())


async def test_a_new_stream_starts_at_the_high_water_mark(owner, no_flusher):
    await edge_with_plugins("hpc1", owner)
    await add(n=3, owner=owner.pk)
    await flush()
    high = await sync_to_async(sse._max_event_id)()
    body = (await owner_stream(owner, last_event_id=None)).body()
    assert await next_chunk(body) == "retry: 3000\n\n"
    assert await next_chunk(body) == f"id: {high}\n\n"  # Last-Event-ID moves on, nothing dispatched
    assert parse(f"id: {high}\n\n") == []
    await add(n=1, owner=owner.pk, start=3)
    await flush()
    [(kind, event_id, data)] = parse(await next_chunk(body))
    assert kind == "notification" and int(event_id) == high + 1 and data["data"] == {"i": 3}
    await body.aclose()


async def test_an_event_already_replayed_is_not_sent_again_live(owner):
    stream = await owner_stream(owner, last_event_id=0)
    stream.high = stream.sent = 10
    stream.joined = {"hpc1"}
    await edge_with_plugins("hpc1", owner)
    event = {"kind": "notification", "edge": "hpc1", "plugin": "echo", "topic": "tick", "owner": owner.pk,
             "json": "{}"}
    text = await stream._render([{**event, "id": 9}, {**event, "id": 10}, {**event, "id": 11}])
    assert [e[1] for e in parse(text.replace("{}", '{"x":1}'))] == ["11"]


async def write_batch(edge: str, owner_uid: int, ticks: list[int]) -> list[dict]:
    """Write (commit) one batch as a bridge process's flusher does, without publishing it."""
    await add(edge=edge, n=len(ticks), owner=owner_uid, start=ticks[0])
    return await sync_to_async(events.events_flush_sync)()


async def test_a_subscriber_that_resumes_after_events_arrived_out_of_id_order_misses_none(owner, no_flusher):
    """Two processes write a batch each, in id order (commit order); the second publishes
    first, the first's message is still in flight. The stream must not let its client's
    Last-Event-ID pass the first batch before it was sent (issue: soak item 5)."""
    await edge_with_plugins("hpc1", owner)
    stream = await owner_stream(owner, last_event_id=None)
    body = stream.body()
    await next_chunk(body)  # retry:
    last_id = (await next_chunk(body)).split()[1]  # id: high
    early = await write_batch("hpc1", owner.pk, [0, 1])  # process A: committed, not yet published
    late = await write_batch("hpc1", owner.pk, [2])  # process B: committed after A, published first
    assert max(e["id"] for e in early) < late[0]["id"]
    await events.publish(late)
    got = parse(await next_chunk(body))
    assert [data["data"]["i"] for _, _, data in got] == [0, 1, 2]  # A's from the database, before B's
    assert [int(i) for _, i, _ in got] == sorted(e["id"] for e in early + late)
    assert stream.hole_reads == 1
    last_id = got[-1][1]
    await body.aclose()  # the client goes away here, with Last-Event-ID = B's id

    resumed = await owner_stream(owner, last_event_id=int(last_id))
    body = resumed.body()
    await next_chunk(body)
    await events.publish(early)  # A's live message arrives at last: already sent
    more = await write_batch("hpc1", owner.pk, [3])
    await events.publish(more)
    assert [data["data"]["i"] for _, _, data in parse(await next_chunk(body))] == [3]
    await body.aclose()


async def test_a_stream_sends_live_events_in_id_order_once_each(owner, no_flusher):
    """Out-of-order live messages of two edges: every event once, in id order, and a batch
    whose ids leave no hole costs no database read."""
    await edge_with_plugins("hpc1", owner)
    await edge_with_plugins("hpc2", owner)
    await write_batch("hpc1", owner.pk, [-1])  # the high-water mark is an event's id
    stream = await owner_stream(owner, last_event_id=None)
    body = stream.body()
    await next_chunk(body)
    await next_chunk(body)
    first = await write_batch("hpc1", owner.pk, [0, 1, 2])
    await events.publish(first)
    assert [data["data"]["i"] for _, _, data in parse(await next_chunk(body))] == [0, 1, 2]
    assert stream.hole_reads == 0  # nothing between the high-water mark and these
    a = await write_batch("hpc1", owner.pk, [3])
    b = await write_batch("hpc2", owner.pk, [4])
    c = await write_batch("hpc1", owner.pk, [5])
    await events.publish(c)
    await events.publish(b)
    await events.publish(a)
    sent: list = []
    while len(sent) < 3:
        sent += parse(await next_chunk(body))
    assert [(data["edge"], data["data"]["i"]) for _, _, data in sent] == [("hpc1", 3), ("hpc2", 4), ("hpc1", 5)]
    assert [int(i) for _, i, _ in sent] == [a[0]["id"], b[0]["id"], c[0]["id"]]
    d = await write_batch("hpc2", owner.pk, [6])
    await events.publish(d)
    assert [data["data"]["i"] for _, _, data in parse(await next_chunk(body))] == [6]
    await body.aclose()


async def test_the_rest_of_a_batch_fills_the_hole_without_a_database_read(owner, no_flusher):
    """A batch of two edges goes out as one message per group; a stream that got the first
    waits for the second (EVENTS_HOLE_WAIT) instead of reading the hole from the database."""
    await edge_with_plugins("hpc1", owner)
    await edge_with_plugins("hpc2", owner)
    await write_batch("hpc1", owner.pk, [-1])
    with override_settings(RADICAL_EDGE={"EVENTS_HOLE_WAIT": 30.0}):  # however slow the machine
        stream = await owner_stream(owner, last_event_id=None)
        body = stream.body()
        await next_chunk(body)
        await next_chunk(body)
        for i, edge in enumerate(["hpc1", "hpc2", "hpc1", "hpc2"]):
            await events.event_received(edge, notify(edge, i, owner.pk))
        batch = await sync_to_async(events.events_flush_sync)()
        pending = asyncio.ensure_future(next_chunk(body, timeout=20))
        await events.publish([e for e in batch if e["edge"] == "hpc1"])
        for _ in range(5):
            await asyncio.sleep(0)  # the stream takes the first message alone
        await events.publish([e for e in batch if e["edge"] == "hpc2"])
        got = parse(await pending)
        assert [(data["edge"], data["data"]["i"]) for _, _, data in got] == [
            ("hpc1", 0), ("hpc2", 1), ("hpc1", 2), ("hpc2", 3)]
        assert stream.hole_reads == 0
        await body.aclose()


def test_a_hole_read_asks_only_for_the_missing_ids():
    assert sse.missing_ranges(10, 20, {11, 12, 15, 20}) == [(13, 14), (16, 19)]
    assert sse.missing_ranges(10, 20, set(range(11, 21))) == []
    assert sse.missing_ranges(0, 5, {2}) == [(1, 1), (3, 5)]  # up to a joined edge's high-water mark
    many = sse.missing_ranges(0, 1000, set(range(2, 1000, 2)))  # 500 holes, merged
    assert len(many) <= sse.HOLE_RANGES and many[0][0] == 1 and many[-1][1] == 1000
    assert all(any(lo <= i <= hi for lo, hi in many) for i in range(1, 1001, 2))


async def test_a_hole_read_shows_only_what_the_caller_may_see(people, no_flusher):
    """Events read from the database to fill a hole obey the same rules as live ones."""
    principal = people["uma"]  # a user of hpc1: topology, and her own notifications

    async def revalidate():
        return principal

    stream = EventStream(principal, Filters(), last_event_id=None, revalidate=revalidate)
    body = stream.body()
    await next_chunk(body)
    await next_chunk(body)
    hidden = await write_batch("hpc1", people["olga"].user_id, [0])
    mine = await write_batch("hpc1", principal.user_id, [1])
    last = await write_batch("hpc1", principal.user_id, [2])
    await events.publish(last)
    got = parse(await next_chunk(body))
    assert [data["data"]["i"] for _, _, data in got] == [1, 2] and stream.hole_reads == 1
    await events.publish(mine + hidden)
    await events.topology_changed("hpc1", online=False)
    await flush()
    assert [kind for kind, _, _ in parse(await next_chunk(body))] == ["topology"]  # and no repeat
    await body.aclose()


async def test_a_stream_follows_an_edge_created_after_it_started(owner, no_flusher):
    body = (await owner_stream(owner, last_event_id=None)).body()
    await next_chunk(body)
    await next_chunk(body)  # id: high
    await edge_with_plugins("fresh", owner, ["echo"])
    # The edge connects and at once emits: both land in one batch, published topology
    # first, when the stream is not yet in the edge's group.
    await events.topology_changed("fresh", online=True)
    await add(edge="fresh", n=2, owner=owner.pk)
    await flush()
    got = parse(await next_chunk(body))
    assert [(kind, data.get("online"), data.get("data")) for kind, _, data in got] == [
        ("topology", True, None), ("notification", None, {"i": 0}), ("notification", None, {"i": 1})]
    await add(edge="fresh", n=1, owner=owner.pk, start=2)  # now live, through the edge's group
    await flush()
    assert [data["data"] for _, _, data in parse(await next_chunk(body))] == [{"i": 2}]
    await body.aclose()


async def test_filters_apply_to_replay_and_live(owner, no_flusher):
    await edge_with_plugins("hpc1", owner)
    await events.event_received("hpc1", {**notify(owner=owner.pk, topic="job_status")})
    await events.event_received("hpc1", {**notify(owner=owner.pk, topic="other")})
    await events.topology_changed("hpc1", online=False)
    await flush()
    body = (await owner_stream(owner, last_event_id=0, filters=Filters(topic="job_status"))).body()
    await next_chunk(body)
    assert [data["topic"] for _, _, data in parse(await next_chunk(body))] == ["job_status"]
    await body.aclose()


async def test_a_subscriber_that_falls_behind_is_cut_off(owner, no_flusher):
    await edge_with_plugins("hpc1", owner)
    with override_settings(RADICAL_EDGE={"EVENTS_STREAM_BACKLOG": 50}):
        stream = await owner_stream(owner, last_event_id=None)
        body = stream.body()
        await next_chunk(body)
        await next_chunk(body)
        for start in range(0, 200, 20):  # never read: the backlog overflows
            await add(n=20, owner=owner.pk, start=start)
            await flush()
        await asyncio.sleep(0.05)
        assert stream.overflow and not stream.joined  # it left its groups at once
        assert "too far behind" in await next_chunk(body)
        with pytest.raises(StopAsyncIteration):
            await next_chunk(body)


async def test_a_stream_ends_when_its_callers_access_ends(owner):
    principal = await sync_to_async(principal_of)(owner)
    valid = [principal]

    async def revalidate():
        return valid[0]

    with override_settings(RADICAL_EDGE={"EVENTS_KEEPALIVE": 0.05}):
        body = EventStream(principal, Filters(), last_event_id=None, revalidate=revalidate,
                           revalidate_often=True).body()
        await next_chunk(body)
        await next_chunk(body)
        assert await next_chunk(body) == ": keep-alive\n\n"
        valid[0] = None  # the token was revoked
        assert "access ended" in await next_chunk(body)
        with pytest.raises(StopAsyncIteration):
            await next_chunk(body)


async def test_shutdown_ends_every_stream(owner):
    body = (await owner_stream(owner, last_event_id=None)).body()
    await next_chunk(body)
    await next_chunk(body)
    assert sse.streams_shutdown() == 1
    assert "shutting down" in await next_chunk(body)
    with pytest.raises(StopAsyncIteration):
        await next_chunk(body)
    assert sse.streams_shutdown() == 0


def test_sse_format_round_trips_through_a_standard_parser():
    payload = json.dumps({"id": 3, "data": {"text": "line1\nline2\r\u2028end"}}, ensure_ascii=False)
    text = format_event(3, "notification", payload)
    assert text.count("\n") == 4 and "\r" not in text
    [(kind, event_id, data)] = parse(text)
    assert (kind, event_id, data["data"]["text"]) == ("notification", "3", "line1\nline2\r\u2028end")


# -- the view's refusals -------------------------------------------------------------------------


def test_anonymous_callers_get_401_json(client):
    response = client.get("/events")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")
    response = client.get("/events", HTTP_AUTHORIZATION="Bearer rda_not-a-token")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_bad_parameters_and_invisible_edges_are_refused(client, people, django_user_model):
    _, token = services.api_token_create(user=django_user_model.objects.get(username="stranger"))
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    response = client.get("/events", {"edge": "hpc1"}, **auth)  # exists, but not theirs
    assert response.status_code == 404 and response.json()["error"] == "unknown_edge"
    response = client.get("/events", {"edge": "nope"}, **auth)
    assert response.status_code == 404 and response.json()["error"] == "unknown_edge"
    response = client.get("/events", HTTP_LAST_EVENT_ID="abc", **auth)
    assert response.status_code == 400 and response.json()["error"] == "bad_last_event_id"
    response = client.get("/events", {"last_event_id": "-1"}, **auth)
    assert response.status_code == 400
    response = client.post("/events", **auth)
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_the_openapi_schema_documents_the_stream(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password=None)
    client.force_login(admin)
    schema = client.get("/api/v1/schema/").json()
    operation = schema["paths"]["/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {p["name"] for p in operation["parameters"]} >= {"edge", "plugin", "topic", "Last-Event-ID"}


def test_edges_the_sweep_marks_offline_go_out_as_topology_events(owner):
    from bridge_app.models import Edge

    services.edge_token_create(name="hpc1", owner=owner)
    Edge.objects.filter(name="hpc1").update(status="online", channel_name="x", last_seen=timezone.now() - timedelta(
        hours=1))
    call_command("edge_sweep")
    [record] = EventRecord.objects.all()
    assert (record.kind, record.edge, record.data) == ("topology", "hpc1", {"online": False})
