"""The proxy's hot-path shortcuts (issue 21): write coalescing on a real socket pair, the
ASGI fast path's choice, and edges loaded ahead of their first call."""

from __future__ import annotations

import asyncio
import socket

import pytest

from edge_agent.coalesce import CoalescingTransport


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost = asyncio.get_event_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


async def _pair():
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    writer, _ = await loop.create_connection(asyncio.Protocol, sock=a)
    _, reader = await loop.create_connection(_Recorder, sock=b)
    return writer, reader


class _CountingTransport:
    """Counts the writes that reach the real transport."""

    def __init__(self, real) -> None:
        self.real = real
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)


async def test_writes_of_one_pass_leave_as_one_write_in_order():
    writer, reader = await _pair()
    counting = _CountingTransport(writer)
    t = CoalescingTransport(counting)
    buf = bytearray(b"head ")
    t.write(buf)
    buf[:] = b"XXXXX"  # the caller reuses its buffer: what was written stays written
    t.writelines([b"body", b"", b" tail"])
    assert counting.writes == []
    assert t.get_write_buffer_size() == len(b"head body tail")
    await asyncio.sleep(0)
    assert counting.writes == [b"head body tail"]
    t.write(b"next")
    await asyncio.sleep(0.05)
    assert counting.writes == [b"head body tail", b"next"]
    assert reader.data == b"head body tailnext"
    t.close()


async def test_close_flushes_first_and_abort_drops():
    writer, reader = await _pair()
    t = CoalescingTransport(writer)
    t.write(b"last words")
    t.close()
    await asyncio.wait_for(reader.lost, 5)
    assert reader.data == b"last words"

    writer, reader = await _pair()
    t = CoalescingTransport(writer)
    t.write(b"never sent")
    t.abort()
    await asyncio.wait_for(reader.lost, 5)
    await asyncio.sleep(0.01)
    assert reader.data == b""


def _scope(path: str, auth: bytes | None = b"Bearer rdx_abc", kind: str = "http") -> dict:
    headers = [(b"host", b"x")] + ([(b"authorization", auth)] if auth is not None else [])
    return {"type": kind, "path": path, "headers": headers, "method": "GET"}


@pytest.mark.parametrize(("scope", "expected"), [
    (_scope("/edge1/sysinfo/version"), True),
    (_scope("/api/v1/edges/edge1/sysinfo/version"), True),
    (_scope("/edge1/sysinfo/version", b"bearer rdx_abc"), True),
    (_scope("/edge1/sysinfo/version", b"Basic dXNlcjpwdw=="), False),  # the original SDK's: compat rewrites it
    (_scope("/edge1/sysinfo/version", None), False),  # a browser session: Django
    (_scope("/events"), False),
    (_scope("/mcp"), False),
    (_scope("/.well-known/oauth-protected-resource/mcp"), False),  # looks like a proxy path; MCP metadata
    (_scope("/admin/x/y"), False),
    (_scope("/edge1/sysinfo/version", kind="websocket"), False),
])
def test_fast_path_takes_only_what_every_layer_passes_on(scope, expected):
    from bridge_app.calls.fastpath import direct

    assert (direct(scope) is not None) is expected


def test_fast_path_is_off_while_shutting_down(monkeypatch):
    from bridge_app.calls.fastpath import direct
    from bridge_app.core import shutdown

    monkeypatch.setattr(shutdown, "_in_progress", True)
    assert direct(_scope("/edge1/sysinfo/version")) is None


@pytest.mark.django_db(transaction=True)
async def test_edges_load_ahead_of_their_first_call_and_reload_after_a_change():
    """What the background load puts in the directory is what a call would have loaded,
    and a change of access is reflected once it is broadcast, not served stale."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth.models import User
    from django.utils import timezone

    from bridge_app.core import directory as directory_module
    from bridge_app.core.directory import Principal, directory
    from bridge_app.models import Edge, EdgeGrant, PluginRegistration

    @sync_to_async
    def setup():
        owner = User.objects.create(username="owner")
        guest = User.objects.create(username="guest")
        edge = Edge.objects.create(name="warm1", owner=owner, status=Edge.Status.ONLINE, channel_name="c1",
                                   last_seen=timezone.now())
        PluginRegistration.objects.create(edge=edge, name="jobs", version="2", routes=[
            {"method": "GET", "path": "status", "readonly": True}])
        Edge.objects.create(name="warm2")
        return owner, guest, edge

    owner, guest, edge = await setup()

    async def cached(name: str):
        for _ in range(200):
            found, entry = directory._edges.get(name)
            if found:
                return entry
            await asyncio.sleep(0.02)
        raise AssertionError(f"{name} was not loaded ahead")

    directory.invalidate("all", None)
    directory.warming = True
    try:
        directory.invalidate("edge", "warm1", reload=True)
        directory.invalidate("edge", "warm2", reload=True)
        directory.invalidate("edge", "no-such-edge", reload=True)
        entry = await cached("warm1")
        on_demand = await directory_module._load_edge("warm1")
        assert (entry.id, entry.owner_id, entry.online, sorted(entry.plugins)) == \
               (on_demand.id, on_demand.owner_id, True, ["jobs"])
        assert entry.plugins["jobs"].router.match("GET", "status")[0].readonly
        assert (await cached("warm2")).plugins == {}
        assert await cached("no-such-edge") is None
        guest_principal = Principal(user_id=guest.pk, username="guest")
        assert entry.role_for(guest_principal) is None
        assert entry.role_for(Principal(user_id=owner.pk, username="owner")) == "owner"

        await sync_to_async(EdgeGrant.objects.create)(edge=edge, user=guest, role="viewer")
        directory.invalidate("access", None, reload=True)  # as every inbox receives it
        assert directory._edges.get("warm1") == (False, None)  # never served stale meanwhile
        assert (await cached("warm1")).role_for(guest_principal) == "viewer"
    finally:
        directory.warming = False
        directory.invalidate("all", None)


@pytest.mark.django_db
def test_heartbeats_are_written_in_batches_with_each_connections_verdict(django_assert_max_num_queries):
    """``services.edges_touch``: one batch, each connection's own verdict (as edge_touch
    gives it alone), last_seen written only for the current sessions."""
    from datetime import timedelta

    from django.utils import timezone

    from bridge_app.domain import services
    from bridge_app.models import Edge

    long_ago = timezone.now() - timedelta(hours=1)
    setups = {}
    for name in ("fine", "old-session", "revoked", "suspended"):
        token, _ = services.edge_token_create(name=name)
        Edge.objects.filter(name=name).update(session_id=f"s-{name}", last_seen=long_ago,
                                              suspended=name == "suspended")
        setups[name] = (token.edge_id, f"s-{name}", token.pk)
    services.edge_token_create(name="revoked")[0].__class__.objects.filter(pk=setups["revoked"][2]) \
        .update(revoked_at=timezone.now())
    touches = [setups["fine"], (setups["old-session"][0], "a-replaced-session", setups["old-session"][2]),
               setups["revoked"], setups["suspended"], (999_999, "gone", setups["fine"][2])]
    with django_assert_max_num_queries(3):
        states = services.edges_touch(touches=touches)
    assert states == ["ok", "superseded", "revoked", "suspended", "superseded"]
    assert [services.edge_touch(edge_id=e, session_id=s, token_id=t) for e, s, t in touches] == states
    seen = dict(Edge.objects.values_list("name", "last_seen"))
    assert seen["fine"] > long_ago and seen["revoked"] > long_ago and seen["suspended"] > long_ago
    assert seen["old-session"] == long_ago
