"""The agent's plugin framework: routing, built-in routes, sessions, events, threads."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from edge_agent.host import PluginHost
from edge_agent.plugin import Caller, HTTPError, Plugin, Request, Response, route
from edge_agent.registry import load_plugins

ALICE = Caller(user="alice", uid=1, role="user")
BOB = Caller(user="bob", uid=2, role="user")
OWNER = Caller(user="olga", uid=3, role="owner")


class Sample(Plugin):
    name = "sample"
    version = "2.0"

    @route("GET", "hello/{who}")
    async def hello(self, request: Request, who: str) -> dict:
        return {"hello": who, "x": request.arg("x")}

    @route("GET", "thread")
    def thread(self, request: Request) -> dict:
        time.sleep(0.05)
        return {"thread": threading.current_thread().name}

    @route("POST", "boom")
    async def boom(self, request: Request) -> dict:
        raise RuntimeError("secret internals")

    @route("POST", "teapot")
    async def teapot(self, request: Request) -> dict:
        raise HTTPError(418, "teapot", "short and stout")

    @route("GET", "note/{sid}")
    async def note(self, request: Request, session) -> dict:
        return {"sid": session.sid, "owner": session.owner.user}

    @route("GET", "raw")
    async def raw(self, request: Request) -> Response:
        return Response.bytes(b"\x00\x01", content_type="application/x-test")


@pytest.fixture
async def host(tmp_path):
    h = PluginHost([Sample], state_dir=tmp_path / "state", sweep_interval=3600)
    await h.start()
    yield h
    await h.stop()


async def call(host: PluginHost, method: str, path: str, caller: Caller = ALICE, body: bytes = b"",
               query: str = "") -> tuple[int, object]:
    resp = await host.dispatch("sample", Request(method=method, path=path, caller=caller, body=body, query=query))
    ctype = resp.headers.get("content-type", "")
    return resp.status, json.loads(resp.body) if ctype.startswith("application/json") else resp.body


async def test_routes_params_and_query(host):
    assert await call(host, "GET", "hello/world", query="x=1&x=2") == (200, {"hello": "world", "x": "2"})


async def test_blocking_handlers_run_in_worker_threads(host):
    status, body = await call(host, "GET", "thread")
    assert status == 200 and body["thread"] != threading.main_thread().name


async def test_errors_are_json_and_do_not_leak_internals(host):
    status, body = await call(host, "POST", "boom")
    assert status == 500 and body["error"] == "plugin_error" and "secret" not in body["detail"]
    assert await call(host, "POST", "teapot") == (418, {"error": "teapot", "detail": "short and stout"})
    status, body = await call(host, "GET", "nope")
    assert status == 404 and body["error"] == "not_found"
    status, body = await call(host, "DELETE", "boom")
    assert status == 405 and body["error"] == "method_not_allowed"
    resp = await host.dispatch("missing", Request(method="GET", path="version"))
    assert resp.status == 404 and json.loads(resp.body)["error"] == "unknown_plugin"


async def test_builtin_routes(host):
    assert await call(host, "GET", "version") == (200, {"plugin": "sample", "version": "2.0"})
    status, health = await call(host, "GET", "health")
    assert status == 200 and health["status"] == "ok" and health["active_sessions"] == 0
    status, ui = await call(host, "GET", "ui_config")
    assert status == 200 and ui["title"] == "sample"
    assert await call(host, "GET", "raw") == (200, b"\x00\x01")


async def test_sessions_belong_to_their_creator(host):
    status, body = await call(host, "POST", "register_session", ALICE, b'{"k": "v"}')
    sid = body["sid"]
    assert status == 200 and len(sid) >= 22  # >= 128 bits of randomness
    assert await call(host, "GET", f"note/{sid}", ALICE) == (200, {"sid": sid, "owner": "alice"})
    status, body = await call(host, "GET", f"note/{sid}", BOB)
    assert status == 404 and body["error"] == "unknown_session"
    assert (await call(host, "GET", f"note/{sid}", OWNER))[0] == 200  # the edge's owner sees everything
    assert (await call(host, "GET", "list_sessions", BOB))[1] == {"sessions": []}
    assert [s["sid"] for s in (await call(host, "GET", "list_sessions", ALICE))[1]["sessions"]] == [sid]
    assert len((await call(host, "GET", "list_sessions", OWNER))[1]["sessions"]) == 1
    assert (await call(host, "POST", f"unregister_session/{sid}", BOB))[0] == 404
    assert await call(host, "POST", f"unregister_session/{sid}", ALICE) == (200, {"ok": True})
    assert (await call(host, "GET", f"note/{sid}", ALICE))[0] == 404


async def test_idle_sessions_expire_with_410_and_are_swept(host):
    plugin = host.plugins["sample"]
    closed = []
    _, body = await call(host, "POST", "register_session")
    sid = body["sid"]
    plugin.sessions[sid].close = lambda: asyncio.sleep(0, closed.append(sid))
    plugin.sessions[sid].last_used -= plugin.session_ttl + 1
    status, body = await call(host, "GET", f"note/{sid}")
    assert status == 410 and body["error"] == "session_expired"
    assert await plugin.sweep_sessions() == 1
    assert closed == [sid] and sid not in plugin.sessions
    assert (await call(host, "GET", f"note/{sid}"))[0] == 410  # still says expired, not unknown


async def test_events_from_many_threads_are_never_dropped(host):
    plugin = host.plugins["sample"]

    def burst(n: int) -> None:
        for i in range(n):
            plugin.emit("tick", {"i": i}, owner=ALICE)

    threads = [threading.Thread(target=burst, args=(500,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    await asyncio.wait_for(host.wait_events(), 1)
    events = []
    while host.events:
        events += host.take_events()
    assert len(events) == 4000
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert {e["owner"] for e in events} == {1} and {e["topic"] for e in events} == {"tick"}


async def test_requeued_events_keep_their_order(host):
    for i in range(5):
        host.plugins["sample"].emit("t", i)
    first = host.take_events(3)
    host.requeue_events(first[1:])
    assert [e["data"] for e in host.take_events()] == [1, 2, 3, 4]


def test_manifest_lists_routes_with_readonly_flags(tmp_path):
    h = PluginHost([Sample], state_dir=tmp_path)
    manifest = h.manifest()[0]
    routes = {(r["method"], r["path"]): r["readonly"] for r in manifest["routes"]}
    assert routes[("GET", "hello/{who}")] is True
    assert routes[("POST", "boom")] is False
    assert routes[("POST", "register_session")] is True  # opening a session changes nothing
    assert manifest["name"] == "sample" and manifest["version"] == "2.0"


def test_plugins_load_by_name_or_module_spec():
    classes = load_plugins(["sysinfo", "tests.plugins.echo:EchoPlugin"])
    assert [c.name for c in classes] == ["sysinfo", "echo"]
    with pytest.raises(ValueError, match="unknown plugin"):
        load_plugins(["nope"])


def test_json_answers_are_valid_json_whatever_the_handler_returns():
    """Response.json: compact JSON any parser accepts, for what handlers commonly return."""
    import datetime
    import json as stdlib_json

    from edge_agent.plugin import Response

    when = datetime.datetime(2026, 12, 3, 18, 0, 1, 250000, tzinfo=datetime.timezone.utc)
    body = Response.json({"n": 1, 2: "int key", "nan": float("nan"), "inf": float("inf"),
                          "tags": {"a"}, "pair": (1, 2), "raw": b"caf\xc3\xa9", "at": when, "text": "café"}).body
    assert stdlib_json.loads(body, parse_constant=lambda c: pytest.fail(f"not JSON: {c}")) == {
        "n": 1, "2": "int key", "nan": None, "inf": None, "tags": ["a"], "pair": [1, 2],
        "raw": "café", "at": "2026-12-03T18:00:01.250000+00:00", "text": "café"}
    assert stdlib_json.loads(Response.json({"big": 2**70, "at": when}).body) == {
        "big": 2**70, "at": "2026-12-03T18:00:01.250000+00:00"}
