"""EdgeConsumer and the reply inbox, driven through the real ``asgi.application`` with
channels' WebsocketCommunicator playing the agent."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator

from bridge_app.calls.proxy import CallInfo, ProxyError, ProxyTarget, proxy_call
from bridge_app.core.directory import Principal, directory
from bridge_app.core.rpc import get_inbox
from bridge_app.domain import services
from bridge_app.models import Edge
from edge_agent import protocol
from radical_edge_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PLUGINS = [{"name": "echo", "version": "1", "routes": [
    {"method": "GET", "path": "ping", "readonly": True},
    {"method": "POST", "path": "work", "readonly": False},
]}]


@pytest.fixture(autouse=True)
def fresh_layer_and_caches():
    channel_layers.backends.clear()  # the in-memory layer's queues belong to one event loop
    directory.invalidate("all", None)
    yield
    channel_layers.backends.clear()


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("olga", password="x")


@pytest.fixture
def edge_token(owner):
    _, plaintext = services.edge_token_create(name="hpc1", owner=owner)
    return plaintext


def hello(**overrides) -> dict:
    frame = {"type": "hello", "protocol": 1, "agent_version": "test", "host": {"hostname": "node1"},
             "plugins": PLUGINS}
    frame.update(overrides)
    return frame


async def connect(token: str | None) -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    comm = WebsocketCommunicator(application, "/register", headers=headers)
    connected, _ = await comm.connect()
    assert connected
    return comm


async def agent(token: str, **hello_overrides) -> WebsocketCommunicator:
    comm = await connect(token)
    await comm.send_json_to(hello(**hello_overrides))
    welcome = await comm.receive_json_from(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return comm


async def refused(comm: WebsocketCommunicator) -> tuple[dict, int]:
    bye = await comm.receive_json_from(timeout=5)
    closed = await comm.receive_output(timeout=5)
    assert closed["type"] == "websocket.close"
    return bye, closed["code"]


def principal_for(user) -> Principal:
    return Principal(user_id=user.pk, username=user.username)


async def call(principal: Principal, route: str = "ping", method: str = "GET", body: bytes = b"", timeout=None):
    headers = {"x-request-timeout": str(timeout)} if timeout else {}
    return await proxy_call(principal=principal, target=ProxyTarget("hpc1", "echo", route), method=method,
                            query="", headers=headers, body=body, info=CallInfo("t", principal, None, method))


async def test_missing_and_wrong_tokens_are_refused_with_a_reason():
    comm = await connect(None)
    await comm.send_json_to(hello())
    bye, code = await refused(comm)
    assert bye["reason"] == "unauthorized" and bye["retry"] is False and code == protocol.CLOSE_UNAUTHORIZED
    comm = await connect("rde_not-a-real-token")
    await comm.send_json_to(hello())
    bye, _ = await refused(comm)
    assert bye["detail"] == "unknown edge token"


async def test_revoked_token_is_refused(edge_token):
    token = await sync_to_async(lambda: Edge.objects.get(name="hpc1").tokens.get())()
    await sync_to_async(services.edge_token_revoke)(token=token)
    comm = await connect(edge_token)
    await comm.send_json_to(hello())
    bye, _ = await refused(comm)
    assert bye["reason"] == "token_revoked" and bye["retry"] is False


async def test_older_or_newer_protocols_get_a_clear_refusal_not_a_hang(edge_token):
    comm = await connect(edge_token)
    await comm.send_json_to(hello(protocol=2))
    bye, code = await refused(comm)
    assert bye["reason"] == "unsupported_protocol" and "upgrade" in bye["detail"]
    assert code == protocol.CLOSE_UNSUPPORTED
    comm = await connect(edge_token)
    await comm.send_json_to({"type": "hello", "version": "0.9"})  # a pre-v1 hello
    bye, _ = await refused(comm)
    assert bye["reason"] == "bad_hello" and "protocol" in bye["detail"]


async def test_a_token_cannot_claim_another_edges_name(edge_token):
    comm = await connect(edge_token)
    await comm.send_json_to(hello(name="someone-elses"))
    bye, _ = await refused(comm)
    assert bye["reason"] == "unauthorized" and "belongs to edge 'hpc1'" in bye["detail"]


async def test_welcome_marks_the_edge_online_with_its_plugins(edge_token):
    comm = await agent(edge_token)
    edge = await sync_to_async(lambda: Edge.objects.prefetch_related("plugins").get(name="hpc1"))()
    assert edge.is_online and edge.host == "node1" and edge.agent_version == "test"
    assert [p.name for p in edge.plugins.all()] == ["echo"]
    await comm.disconnect()
    edge = await sync_to_async(Edge.objects.get)(name="hpc1")
    assert not edge.is_online


async def test_request_goes_through_the_edge_and_back(edge_token, owner):
    comm = await agent(edge_token)
    task = asyncio.ensure_future(call(principal_for(owner), "work", "POST", body=b'{"n": 1}'))
    frame = await comm.receive_json_from(timeout=5)
    assert frame["type"] == "request" and frame["path"] == "work" and frame["body"] == '{"n": 1}'
    assert frame["caller"] == {"user": "olga", "uid": owner.pk, "role": "owner", "scope": "full"}
    await comm.send_json_to({"type": "response", "req_id": frame["req_id"], "status": 201,
                             "headers": {"content-type": "text/plain"}, "body": "done"})
    reply = await asyncio.wait_for(task, 5)
    assert reply.status == 201 and reply.body == b"done"
    assert (b"content-type", b"text/plain") in reply.headers
    await comm.disconnect()


async def test_malformed_frames_get_error_frames_and_the_connection_carries_on(edge_token, owner):
    comm = await agent(edge_token)
    for bad, code in [("{nope", "bad_json"), ('{"type": "warp"}', "unknown_type"),
                      ('{"type": "response", "req_id": "x"}', "bad_frame")]:
        await comm.send_to(text_data=bad)
        err = await comm.receive_json_from(timeout=5)
        assert err["type"] == "error" and err["error"] == code
    await comm.send_to(bytes_data=b"\x00")
    assert (await comm.receive_json_from(timeout=5))["error"] == "bad_chunk"
    # A response for a request nobody made is dropped quietly.
    await comm.send_json_to({"type": "response", "req_id": "ghost", "status": 200, "body": "boo"})
    task = asyncio.ensure_future(call(principal_for(owner)))
    frame = await comm.receive_json_from(timeout=5)
    await comm.send_json_to({"type": "response", "req_id": frame["req_id"], "status": 200, "body": "ok"})
    assert (await asyncio.wait_for(task, 5)).body == b"ok"
    await comm.disconnect()


async def test_a_second_connection_replaces_the_first(edge_token, owner):
    first = await agent(edge_token)
    second = await agent(edge_token)
    bye = await first.receive_json_from(timeout=5)
    assert bye["type"] == "bye" and bye["reason"] == "superseded"
    task = asyncio.ensure_future(call(principal_for(owner)))
    frame = await second.receive_json_from(timeout=5)
    await second.send_json_to({"type": "response", "req_id": frame["req_id"], "status": 200, "body": "2nd"})
    assert (await asyncio.wait_for(task, 5)).body == b"2nd"
    # The old connection closing late does not take the new one offline.
    await first.disconnect()
    assert (await sync_to_async(Edge.objects.get)(name="hpc1")).is_online
    await second.disconnect()


async def test_disconnect_fails_the_requests_in_flight_at_once(edge_token, owner):
    comm = await agent(edge_token)
    tasks = [asyncio.ensure_future(call(principal_for(owner))) for _ in range(3)]
    for _ in tasks:
        await comm.receive_json_from(timeout=5)
    await comm.disconnect()
    for task in tasks:
        with pytest.raises(ProxyError) as exc:
            await asyncio.wait_for(task, 2)
        assert exc.value.status == 502 and exc.value.error == "edge_disconnected"


async def test_a_request_whose_send_fails_is_failed_at_once_not_at_the_timeout(edge_token, owner, monkeypatch):
    """An agent that dies while its request is being written: the caller gets 502 now."""
    from bridge_app.agents.consumers import EdgeConsumer

    comm = await agent(edge_token)

    async def socket_gone(self, text):
        self.closed = True
        return False

    monkeypatch.setattr(EdgeConsumer, "_send_frame_text", socket_gone)
    with pytest.raises(ProxyError) as exc:
        await asyncio.wait_for(call(principal_for(owner), timeout=30), 5)
    assert exc.value.status == 502 and exc.value.error == "edge_disconnected"
    await comm.disconnect()


async def channel_reported_down(channel: str) -> bool:
    """Whether this process's inbox hears within 2 s that the connection at ``channel``
    ended (bridge.edge_down)."""
    inbox = await get_inbox()
    for _ in range(100):
        if inbox.channel_down(channel):
            return True
        await asyncio.sleep(0.02)
    return inbox.channel_down(channel)


def stale_directory_once(monkeypatch, entry) -> None:
    """The next lookup of the edge returns ``entry`` (what another process's cache still held
    when the edge moved), later ones the real answer."""
    real = directory.edge
    served = []

    async def edge(name):
        if not served:
            served.append(name)
            return entry
        return await real(name)

    monkeypatch.setattr(directory, "edge", edge)


async def test_a_request_reaching_a_closed_connection_is_sent_again_to_the_new_one(edge_token, owner, monkeypatch):
    """A drained connection that closed a moment before a request arrived (sent there by a
    process whose cache had not heard of the new connection yet): the request never reached
    the agent, so it goes to the edge's new connection instead of failing."""
    from bridge_app.agents import consumers

    first = await agent(edge_token)
    old_entry = await directory.edge("hpc1")
    second = await agent(edge_token)
    assert (await first.receive_json_from(timeout=5))["reason"] == "superseded"
    (closing,) = [c for c in consumers._live if c.channel_name == old_entry.channel_name]
    closing.closed = True  # closed, its socket loop not yet ended
    stale_directory_once(monkeypatch, old_entry)
    task = asyncio.ensure_future(call(principal_for(owner), "work", "POST", body=b"once"))
    frame = await second.receive_json_from(timeout=5)
    assert frame["path"] == "work" and frame["body"] == "once"
    await second.send_json_to({"type": "response", "req_id": frame["req_id"], "status": 200, "body": "moved"})
    assert (await asyncio.wait_for(task, 5)).body == b"moved"
    await first.disconnect()
    await second.disconnect()


async def test_a_request_for_a_connection_known_gone_goes_to_the_new_one_not_into_the_void(edge_token, owner,
                                                                                            monkeypatch):
    """Once a connection's end is announced (bridge.edge_down), a request sent to its channel
    would wait for the timeout: it is sent where the edge is connected now."""
    first = await agent(edge_token)
    old_entry = await directory.edge("hpc1")
    await first.disconnect()
    assert await channel_reported_down(old_entry.channel_name)
    second = await agent(edge_token)
    stale_directory_once(monkeypatch, old_entry)
    task = asyncio.ensure_future(call(principal_for(owner), timeout=30))
    frame = await second.receive_json_from(timeout=5)
    await second.send_json_to({"type": "response", "req_id": frame["req_id"], "status": 200, "body": "here"})
    assert (await asyncio.wait_for(task, 5)).body == b"here"
    await second.disconnect()


async def test_a_moved_request_whose_edge_does_not_come_back_is_refused_as_offline(edge_token, owner, monkeypatch):
    from bridge_app.calls import proxy

    monkeypatch.setattr(proxy, "RELOCATE_WAIT", 0.3)
    first = await agent(edge_token)
    old_entry = await directory.edge("hpc1")
    await first.disconnect()
    stale_directory_once(monkeypatch, old_entry)
    with pytest.raises(ProxyError) as exc:
        await asyncio.wait_for(call(principal_for(owner), timeout=30), 5)
    assert exc.value.status == 503 and exc.value.error == "edge_offline"


async def test_a_moved_request_is_checked_again_by_the_access_policy(edge_token, owner, django_user_model,
                                                                      monkeypatch):
    """A call that follows its edge to a new connection is admitted again by the same rules
    as at first, on the fresh entry: a user whose grant became viewer meanwhile gets 403 for
    a write, and nothing reaches the agent."""
    ursula = await sync_to_async(django_user_model.objects.create_user)("ursula", password="x")
    edge = await sync_to_async(Edge.objects.get)(name="hpc1")
    await sync_to_async(services.grant_set)(edge=edge, role="user", user=ursula)
    first = await agent(edge_token)
    old_entry = await directory.edge("hpc1")
    assert old_entry.role_for(principal_for(ursula)) == "user"
    await first.disconnect()
    assert await channel_reported_down(old_entry.channel_name)
    second = await agent(edge_token)
    await sync_to_async(services.grant_set)(edge=edge, role="viewer", user=ursula)
    stale_directory_once(monkeypatch, old_entry)
    with pytest.raises(ProxyError) as exc:
        await asyncio.wait_for(call(principal_for(ursula), "work", "POST", body=b"x", timeout=30), 5)
    assert exc.value.status == 403 and exc.value.error == "forbidden"
    assert await second.receive_nothing(timeout=0.3)
    await second.disconnect()


async def test_timeout_sends_cancel_to_the_agent(edge_token, owner):
    comm = await agent(edge_token)
    task = asyncio.ensure_future(call(principal_for(owner), timeout=0.2))
    frame = await comm.receive_json_from(timeout=5)
    with pytest.raises(ProxyError) as exc:
        await asyncio.wait_for(task, 5)
    assert exc.value.status == 504
    cancel = await comm.receive_json_from(timeout=5)
    assert cancel == {"type": "cancel", "req_id": frame["req_id"], "reason": "timeout"}
    # The late answer is dropped without trouble.
    await comm.send_json_to({"type": "response", "req_id": frame["req_id"], "status": 200, "body": "late"})
    await comm.disconnect()


async def test_streamed_response_is_reassembled_in_order(edge_token, owner):
    comm = await agent(edge_token)
    task = asyncio.ensure_future(call(principal_for(owner)))
    frame = await comm.receive_json_from(timeout=5)
    body = bytes(range(256)) * 2000
    await comm.send_json_to({"type": "response", "req_id": frame["req_id"], "status": 200, "stream": True,
                             "length": len(body), "headers": {}})
    for seq, piece, last in protocol.iter_chunks(body, 100_000):
        await comm.send_to(bytes_data=protocol.pack_chunk(frame["req_id"], seq, bytes(piece), last=last))
    reply = await asyncio.wait_for(task, 5)
    assert reply.length == len(body)
    assert b"".join([piece async for piece in reply.stream]) == body
    await comm.disconnect()


async def test_edge_events_are_published_to_the_edges_group(edge_token):
    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add("portal.edge.hpc1", listener)
    comm = await agent(edge_token)
    await comm.send_json_to({"type": "event", "plugin": "echo", "topic": "tick", "data": {"i": 1}, "owner": 7})
    message = await asyncio.wait_for(layer.receive(listener), 5)
    # Written first (the id is the database's), then published in a batch (tests/test_events_*.py).
    assert message["type"] == "portal.events"
    [event] = message["events"]
    assert event["id"] > 0 and event["owner"] == 7 and json.loads(event["json"])["data"] == {"i": 1}
    await comm.disconnect()


async def test_ping_gets_pong(edge_token):
    comm = await agent(edge_token)
    await comm.send_json_to({"type": "ping", "ts": 1.5})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong", "ts": 1.5}
    await comm.disconnect()


async def test_a_call_cut_off_by_the_servers_shutdown_limit_gets_json_and_an_audit_record(edge_token, owner):
    """uvicorn cancels the requests still open at its graceful-shutdown limit; the caller gets
    a JSON 503 and the audit trail the call, not the server's bare 500 and nothing."""
    from bridge_app.observability import audit

    _, api_token = await sync_to_async(services.api_token_create)(user=owner, name="t")
    comm = await agent(edge_token)
    scope = {"type": "http", "method": "GET", "path": "/hpc1/echo/ping", "query_string": b"",
             "headers": [(b"authorization", f"Bearer {api_token}".encode()), (b"host", b"localhost")],
             "client": ("127.0.0.1", 5000)}
    sent: list[dict] = []

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    audit.buffer.take()
    task = asyncio.ensure_future(application(scope, lambda: receive_body(), send))
    queued = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive_body():
        return queued.pop() if queued else await receive()

    frame = await comm.receive_json_from(timeout=5)  # the agent has it, and does not answer
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    start, body = sent
    assert start["status"] == 503 and json.loads(body["body"])["error"] == "bridge_shutdown"
    (row,) = [r for r in audit.buffer.take() if r[7] == "ping"]  # audit._row's order
    assert (row[2], row[8]) == ("olga", 503)
    assert frame["path"] == "ping"
    await comm.disconnect()
