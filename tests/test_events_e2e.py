"""Events end to end: real bridge processes (one embedded, or two on PostgreSQL + Redis),
real agents whose echo plugin emits from a worker thread, raw SSE clients and the SDK."""

from __future__ import annotations

import json
import re
import socket
import threading

import httpx
import pytest

from edge_agent.client import BridgeClient
from tests.support.live import PASSWORD, LiveBridge, start_all, wait_for

pytestmark = pytest.mark.e2e

PLUGINS = "sysinfo,tests.plugins.echo:EchoPlugin"
# How long a wait may take before the test fails: generous, as the waits end as soon as the
# condition holds (20 s ran out for cross-process deliveries on a loaded machine).
WAIT = 60


class SSEClient:
    """A raw ``GET /events`` reader in a thread (deliberately not the SDK's parser): keeps
    every event as ``(id, type, data)`` and the comments it saw."""

    def __init__(self, url: str, *, token: str | None = None, cookies: httpx.Cookies | None = None,
                 params: dict | None = None, headers: dict | None = None, verify=True) -> None:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=url, headers=hdrs, cookies=cookies, timeout=httpx.Timeout(10, read=60),
                                 verify=verify)
        self.params = params or {}
        self.events: list[tuple[int, str, dict]] = []
        self.comments: list[str] = []
        self.status: int | None = None
        self.connected = threading.Event()
        self.ended = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.connected.wait(WAIT), "the event stream did not start"

    def _run(self) -> None:
        try:
            with self.http.stream("GET", "/events", params=self.params) as response:
                self.status = response.status_code
                self._response = response
                buf = ""
                for text in response.iter_text():
                    buf += text
                    while "\n\n" in buf:
                        block, buf = buf.split("\n\n", 1)
                        self._block(block)
        except httpx.HTTPError:
            pass
        finally:
            self.connected.set()
            self.ended.set()

    def _block(self, block: str) -> None:
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line)
            else:
                key, _, value = line.partition(": ")
                fields[key] = value
        if "retry" in fields:
            self.connected.set()
        if "data" in fields:
            self.events.append((int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"])))

    def notifications(self, topic: str = "tick") -> list[tuple[int, dict]]:
        return [(i, d) for i, kind, d in self.events if kind == "notification" and d["topic"] == topic]

    def topology(self) -> list[dict]:
        return [d for _, kind, d in self.events if kind == "topology"]

    def close(self) -> None:
        response = self._response
        stream = response.extensions.get("network_stream") if response is not None else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(10)
        self.http.close()


@pytest.fixture
def sse_clients():
    clients: list[SSEClient] = []

    def make(*args, **kwargs) -> SSEClient:
        clients.append(SSEClient(*args, **kwargs))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


def emit(bridge: LiveBridge, token: str, edge: str, count: int) -> None:
    with bridge.client(token) as c:
        assert c.post(f"/{edge}/echo/emit/{count}").json() == {"emitted": count}


def ticks(items) -> list[int]:
    return [d["data"]["i"] for _, d in items]


def test_events_reach_an_sse_client_and_an_sdk_callback(edge_setup, sse_clients):
    site = edge_setup()
    raw = sse_clients(site.bridge.url, token=site.token)
    got: list[dict] = []
    bc = BridgeClient(site.bridge.url, token=site.token)
    sub = bc.register_callback(site.edge, "echo", "tick", got.append)
    assert sub.wait_connected(WAIT)
    emit(site.bridge, site.token, site.edge, 50)
    wait_for(lambda: len(raw.notifications()) == 50 and len(got) == 50, WAIT, what="50 events at both subscribers")
    assert ticks(raw.notifications()) == list(range(50))  # in order, none twice
    ids = [i for i, _ in raw.notifications()]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert [e["id"] for e in got] == ids and [e["data"]["i"] for e in got] == list(range(50))
    assert got[0]["type"] == "notification" and got[0]["edge"] == site.edge and got[0]["plugin"] == "echo"
    bc.close()
    assert not sub.running


def test_replay_after_a_reconnect_with_last_event_id(edge_setup, sse_clients):
    site = edge_setup()
    first = sse_clients(site.bridge.url, token=site.token, params={"edge": site.edge, "topic": "tick"})
    emit(site.bridge, site.token, site.edge, 5)
    wait_for(lambda: len(first.notifications()) == 5, WAIT, what="the first five")
    seen_up_to = first.notifications()[2][0]  # the client dropped after the third
    first.close()
    emit(site.bridge, site.token, site.edge, 5)  # while nobody listens

    by_header = sse_clients(site.bridge.url, token=site.token, params={"edge": site.edge},
                            headers={"Last-Event-ID": str(seen_up_to)})
    by_query = sse_clients(site.bridge.url, token=site.token, params={"last_event_id": seen_up_to})
    emit(site.bridge, site.token, site.edge, 1)  # and one live after the replay
    for client in (by_header, by_query):
        wait_for(lambda c=client: len(c.notifications()) == 8, WAIT, what="replay, then live")
        assert ticks(client.notifications()) == [3, 4, 0, 1, 2, 3, 4, 0]
        ids = [i for i, _ in client.notifications()]
        assert ids == sorted(ids) and ids[0] > seen_up_to and len(set(ids)) == 8


def test_the_sdk_misses_nothing_across_a_bridge_restart(edge_setup):
    site = edge_setup()
    got: list[dict] = []
    bc = BridgeClient(site.bridge.url, token=site.token)
    sub = bc.register_callback(site.edge, "echo", "tick", got.append, backoff_max=2)
    assert sub.wait_connected(WAIT)
    emit(site.bridge, site.token, site.edge, 3)
    wait_for(lambda: len(got) == 3, WAIT, what="events before the restart")

    site.bridge.stop()  # SIGTERM: streams end at once, the buffer is written
    site.bridge.start()
    wait_for(lambda: site.bridge.edge_online(site.token, site.edge), 30, what="the agent back")
    emit(site.bridge, site.token, site.edge, 3)  # likely before the SDK is back: replayed
    wait_for(lambda: len(got) == 6, 30, what="events after the restart")
    assert [e["data"]["i"] for e in got] == [0, 1, 2, 0, 1, 2]
    assert len({e["id"] for e in got}) == 6
    emit(site.bridge, site.token, site.edge, 1)
    wait_for(lambda: len(got) == 7, WAIT, what="a live event after catching up")
    bc.close()


def login(url: str, username: str) -> httpx.Cookies:
    """A portal session, through the login form (CSRF and all)."""
    with httpx.Client(base_url=url, follow_redirects=False) as c:
        page = c.get("/accounts/login/").text
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        response = c.post("/accounts/login/", data={"username": username, "password": PASSWORD,
                                                    "csrfmiddlewaretoken": csrf},
                          headers={"Referer": f"{url}/accounts/login/"})
        assert response.status_code == 302, response.text[:500]
        return c.cookies


def test_each_subscriber_sees_only_what_it_may(bridge_factory, agent_factory, unique_name, sse_clients):
    """The owner sees everything of the edge; a user sees topology and their own
    notifications; a viewer (here through a portal session) topology only; a stranger nothing."""
    bridge = bridge_factory()
    people = ["olga", "uma", "vera", "stranger"]
    seeded = bridge.seed(users=people, api_tokens=people, edge_tokens=[(unique_name, "olga")])
    tokens, edge = seeded["api"], unique_name
    bridge.manage("edge_grant", edge, "uma", "user")
    bridge.manage("edge_grant", edge, "vera", "viewer")
    streams = {name: sse_clients(bridge.url, token=tokens[name]) for name in ("olga", "uma", "stranger")}
    streams["vera"] = sse_clients(bridge.url, cookies=login(bridge.url, "vera"))
    assert {s.status for s in streams.values()} == {200}

    agent = agent_factory(bridge, seeded["edge"][edge], plugins=PLUGINS)
    wait_for(lambda: bridge.edge_online(tokens["olga"], edge), WAIT, what="edge online")
    emit(bridge, tokens["uma"], edge, 3)
    emit(bridge, tokens["olga"], edge, 2)
    wait_for(lambda: len(streams["olga"].notifications()) == 5, WAIT, what="the owner sees all five")
    agent.stop()  # the last event of all, seen by everyone who may see the edge
    for name in ("olga", "uma", "vera"):
        wait_for(lambda n=name: [t["online"] for t in streams[n].topology()] == [True, False], WAIT,
                 what=f"{name} sees the edge come and go")
    assert streams["olga"].topology()[0]["plugins"] == ["echo", "sysinfo"]
    assert ticks(streams["uma"].notifications()) == [0, 1, 2]  # hers only
    assert streams["vera"].notifications() == []
    assert streams["stranger"].events == []

    # Replay obeys the same rules.
    everything = sse_clients(bridge.url, token=tokens["vera"], params={"last_event_id": 0})
    wait_for(lambda: len(everything.topology()) == 2, WAIT, what="the viewer's replay")
    assert everything.notifications() == []
    nothing = sse_clients(bridge.url, token=tokens["stranger"], params={"last_event_id": 0})
    wait_for(lambda: any("id: " in c for c in nothing.comments) or nothing.connected.is_set(), 5)
    with httpx.Client(base_url=bridge.url) as anonymous:
        response = anonymous.get("/events")
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    with bridge.client(tokens["stranger"]) as c:
        assert c.get("/events", params={"edge": edge}).json()["error"] == "unknown_edge"


@pytest.mark.redis
@pytest.mark.postgres
def test_an_event_on_one_process_reaches_a_subscriber_on_another(bridge_factory, agent_factory, unique_name,
                                                                  sse_clients):
    """Two bridge processes on the same PostgreSQL and Redis; the agent on A, subscribers on B."""
    a, b = start_all([bridge_factory("scaled", start=False), bridge_factory("scaled", start=False)])
    seeded = a.seed(users=["olga"], api_tokens=["olga"], edge_tokens=[(unique_name, "olga")])
    token, edge = seeded["api"]["olga"], unique_name
    on_b = sse_clients(b.url, token=token)
    got: list[dict] = []
    bc = BridgeClient(b.url, token=token)
    sub = bc.register_callback(edge, "echo", "tick", got.append)
    assert sub.wait_connected(WAIT)

    agent_factory(a, seeded["edge"][edge], plugins=PLUGINS)
    wait_for(lambda: a.edge_online(token, edge), WAIT, what="edge online on A")
    emit(a, token, edge, 20)
    wait_for(lambda: len(on_b.notifications()) == 20 and len(got) == 20, WAIT, what="events from A on B")
    assert ticks(on_b.notifications()) == list(range(20)) and [e["data"]["i"] for e in got] == list(range(20))
    assert [t["online"] for t in on_b.topology()] == [True]

    # Replay on B of what happened on A (the same database).
    late = sse_clients(b.url, token=token, params={"last_event_id": on_b.notifications()[9][0]})
    wait_for(lambda: len(late.notifications()) == 10, WAIT, what="replay on B")
    assert ticks(late.notifications()) == list(range(10, 20))
    bc.close()


# Run by ``manage.py shell -c`` as another bridge process would: write one batch (committed
# under the events' advisory lock, ids from the shared sequence), publish it or not, and
# publish events written earlier whose message was "still in flight".
_WRITE = """
import json, time
from asgiref.sync import async_to_sync
from bridge_app.streams import events
late = json.loads({late!r})
if late:
    async_to_sync(events.publish)(late)
written = events._write([("notification", {edge!r}, "echo", "tick", None, {{"i": i}}, time.time()) for i in {ticks!r}])
if {publish!r}:
    async_to_sync(events.publish)(written)
print(json.dumps(written))
"""


def write_events(bridge: LiveBridge, edge: str, ticks: list[int], *, publish: bool,
                 late: list[dict] | None = None) -> list[dict]:
    script = _WRITE.format(edge=edge, ticks=ticks, publish=publish, late=json.dumps(late or []))
    return json.loads(bridge.manage("shell", "-c", script).stdout.strip().splitlines()[-1])


@pytest.mark.redis
@pytest.mark.postgres
def test_a_subscriber_resuming_after_events_of_two_processes_arrived_out_of_order_misses_none(
        bridge_factory, unique_name, sse_clients):
    """Process A commits events 0 and 1, process B commits event 2 after it and publishes
    first; the subscriber (on a third process) hangs up as soon as it has event 2 and
    resumes with that Last-Event-ID; A's message arrives at last. The subscriber gets each
    event exactly once (soak item 5: it used to lose A's for good)."""
    bridge = bridge_factory("scaled")
    seeded = bridge.seed(users=["olga"], api_tokens=["olga"], edge_tokens=[(unique_name, "olga")])
    token, edge = seeded["api"]["olga"], unique_name
    first = sse_clients(bridge.url, token=token, params={"edge": edge})
    early = write_events(bridge, edge, [0, 1], publish=False)  # A: committed, message in flight
    late = write_events(bridge, edge, [2], publish=True)  # B: committed after A, published first
    assert [e["id"] for e in early] < [e["id"] for e in late]
    wait_for(lambda: 2 in ticks(first.notifications()), 30, what="B's event on the stream")
    assert ticks(first.notifications()) == [0, 1, 2]  # A's came from the database, before B's
    metrics = httpx.get(f"{bridge.url}/metrics", timeout=30).text
    assert "radical_edge_events_stream_hole_reads_total 1.0" in metrics.splitlines()
    last_id = first.notifications()[-1][0]
    first.close()

    resumed = sse_clients(bridge.url, token=token, params={"edge": edge}, headers={"Last-Event-ID": str(last_id)})
    write_events(bridge, edge, [3], publish=True, late=early)  # A's message at last, then a new event
    wait_for(lambda: 3 in ticks(resumed.notifications()), 30, what="the event after the resume")
    assert ticks(resumed.notifications()) == [3]
    ids = [i for i, _ in first.notifications() + resumed.notifications()]
    assert ids == sorted(ids) and len(set(ids)) == 4


# Two "processes" (threads with their own connections) write a batch each while the
# notification matcher runs: A's transaction has its ids but has not committed when B
# writes. Prints what the matcher saw before and after A's commit.
_LATE_COMMIT = """
import json, threading, time
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Max
from bridge_app.models import EventRecord
from bridge_app.notifications import worker
from bridge_app.notifications.models import Delivery, Subscription
from bridge_app.streams import events

edge = {edge!r}
start = EventRecord.objects.aggregate(m=Max("id"))["m"] or 0
sub = Subscription.objects.create(user=get_user_model().objects.get(username="olga"), edges=[edge],
                                  target=Subscription.Target.WEBHOOK, url="https://hooks.invalid/x", start_after=start)
worker.match_all()  # the cursor is at the newest event
row = lambda i: ("notification", edge, "echo", "tick", None, {{"i": i}}, time.time())
a_written, b_written = threading.Event(), threading.Event()
commit_a = threading.Event()
ids = {{}}

def process_a():
    with transaction.atomic():
        ids["a"] = events._write([row(0)])[0]["id"]
        a_written.set()
        commit_a.wait(60)
    connection.close()

def process_b():
    a_written.wait(60)
    ids["b"] = events._write([row(1)])[0]["id"]
    b_written.set()
    connection.close()

threads = [threading.Thread(target=process_a), threading.Thread(target=process_b)]
for t in threads:
    t.start()
a_written.wait(60)
# B's batch transaction is open: it has its ids, or waits for the lock to get them.
deadline = time.monotonic() + 30
while not b_written.is_set() and time.monotonic() < deadline:
    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        if c.fetchone()[0]:
            break
    time.sleep(0.05)
worker.match_all()  # the matcher runs in the window
before = sorted(Delivery.objects.filter(subscription=sub).values_list("event_id", flat=True))
commit_a.set()
for t in threads:
    t.join(60)
worker.match_all()
after = sorted(Delivery.objects.filter(subscription=sub).values_list("event_id", flat=True))
print(json.dumps({{"a": ids["a"], "b": ids["b"], "before": before, "after": after}}))
"""


@pytest.mark.redis
@pytest.mark.postgres
def test_the_notification_matcher_never_passes_an_event_committed_late(bridge_factory, unique_name):
    """A batch that got its ids first but commits last must not fall behind the matcher's
    cursor: ids are committed in id order (the events' advisory lock), so B, which writes
    while A's transaction is open, waits for A and gets the larger id; the matcher, run in
    between, sees neither, and afterwards both."""
    bridge = bridge_factory("scaled", start=False)
    bridge.seed(users=["olga"], api_tokens=["olga"], edge_tokens=[(unique_name, "olga")])
    out = json.loads(bridge.manage("shell", "-c", _LATE_COMMIT.format(edge=unique_name)).stdout.strip()
                     .splitlines()[-1])
    assert out["a"] < out["b"]
    assert out["before"] == []
    assert out["after"] == [out["a"], out["b"]]


def test_subscribers_hold_no_thread_each(edge_setup, sse_clients):
    """Streams are served on the event loop, outside Django's request cycle (which keeps a
    thread per request for as long as a response streams)."""
    import psutil

    site = edge_setup()
    process = psutil.Process(site.bridge.proc.pid)
    sse_clients(site.bridge.url, token=site.token)
    before = process.num_threads()
    streams = [sse_clients(site.bridge.url, token=site.token) for _ in range(20)]
    assert process.num_threads() < before + 5
    emit(site.bridge, site.token, site.edge, 3)
    wait_for(lambda: all(len(s.notifications()) == 3 for s in streams), WAIT, what="every stream gets the events")
