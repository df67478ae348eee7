"""Who may call what through the proxy, driven in process: the real ``asgi.application``
over HTTP (httpx's ASGI transport) and a scripted agent on ``/register``.

Every refusal is checked for its status and its ``{"error", "detail"}`` body, and that
nothing reached the agent. The same paths run end to end in test_access_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.test import override_settings
from django.utils import timezone

from bridge_app.calls import throttling
from bridge_app.core.directory import directory
from bridge_app.domain import services
from bridge_app.models import ApiToken, CallRecord
from bridge_app.observability import audit
from radical_edge_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PLUGINS = [{"name": "jobs", "version": "1", "routes": [
    {"method": "GET", "path": "status", "readonly": True},
    {"method": "POST", "path": "submit", "readonly": False},
    {"method": "POST", "path": "cancel/{id}", "readonly": False},
    {"method": "GET", "path": "whoami", "readonly": True},
]}]


@pytest.fixture(autouse=True)
def fresh_state():
    channel_layers.backends.clear()
    directory.invalidate("all", None)
    audit.buffer.take()
    throttling.install()  # fresh buckets for every test
    yield
    channel_layers.backends.clear()
    audit.buffer.take()


class Agent:
    """A scripted agent: answers every request with what it was told about the call."""

    def __init__(self, comm: WebsocketCommunicator) -> None:
        self.comm = comm
        self.frames: list[dict] = []
        self.others: list[dict] = []
        self.closed: int | None = None
        self.task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        while True:
            message = await self.comm.receive_output(timeout=30)
            if message["type"] == "websocket.close":
                self.closed = message.get("code")
                return
            if message.get("text") is None:
                continue  # a body chunk (binary frame): these routes ignore bodies
            frame = json.loads(message["text"])
            if frame.get("type") != "request":
                self.others.append(frame)
                continue
            self.frames.append(frame)
            body = json.dumps({"caller": frame["caller"], "headers": frame["headers"], "path": frame["path"]})
            await self.comm.send_json_to({"type": "response", "req_id": frame["req_id"], "status": 200,
                                          "headers": {"content-type": "application/json"}, "body": body})

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.comm.disconnect()


@pytest.fixture
def users(django_user_model):
    make = django_user_model.objects.create_user
    return {name: make(name) for name in ("olga", "vera", "uma", "gus", "stranger")}


@pytest.fixture
def edge(users):
    token, plaintext = services.edge_token_create(name="hpc1", owner=users["olga"])
    services.grant_set(edge=token.edge, role="viewer", user=users["vera"])
    services.grant_set(edge=token.edge, role="user", user=users["uma"])
    team = Group.objects.create(name="team")
    users["gus"].groups.add(team)
    services.grant_set(edge=token.edge, role="user", group=team)
    return type("E", (), {"row": token.edge, "token": plaintext})


async def api_token(user, **kwargs) -> str:
    return (await sync_to_async(services.api_token_create)(user=user, **kwargs))[1]


@pytest.fixture
async def agent(edge):
    comm = WebsocketCommunicator(application, "/register", headers=[(b"authorization",
                                                                      f"Bearer {edge.token}".encode())])
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "hello", "protocol": 1, "agent_version": "t", "host": {}, "plugins": PLUGINS})
    assert (await comm.receive_json_from(timeout=5))["type"] == "welcome"
    scripted = Agent(comm)
    yield scripted
    await scripted.close()


@pytest.fixture
async def http():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://127.0.0.1") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, error: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and body["detail"], body
    return body


# --- who is calling -----------------------------------------------------------------------


async def test_anonymous_wrong_expired_and_revoked_tokens_reach_nothing(http, agent, users):
    r = await http.get("/hpc1/jobs/status")
    assert_error(r, 401, "unauthorized")
    for bad in ("rda_" + "x" * 43, "rde_notanapitoken", "garbage", "rda_"):
        r = await http.get("/hpc1/jobs/status", headers=bearer(bad))
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")

    expired = await api_token(users["olga"], expires_in_days=1)
    await sync_to_async(ApiToken.objects.filter(user=users["olga"]).update)(
        expires_at=timezone.now() - timedelta(seconds=1))
    assert_error(await http.get("/hpc1/jobs/status", headers=bearer(expired)), 401, "unauthorized")

    token = await api_token(users["olga"])
    assert (await http.get("/hpc1/jobs/status", headers=bearer(token))).status_code == 200
    row = await sync_to_async(ApiToken.objects.get)(prefix=token[:12])
    await sync_to_async(services.api_token_revoke)(token=row)
    # Revocation is broadcast: the cached principal is gone at once, not after CACHE_TTL.
    assert_error(await http.get("/hpc1/jobs/status", headers=bearer(token)), 401, "unauthorized")
    assert len(agent.frames) == 1


async def test_an_inactive_users_tokens_stop_working_at_once(http, agent, users):
    token = await api_token(users["uma"])
    assert (await http.get("/hpc1/jobs/status", headers=bearer(token))).status_code == 200
    users["uma"].is_active = False
    await sync_to_async(users["uma"].save)()
    assert_error(await http.get("/hpc1/jobs/status", headers=bearer(token)), 401, "unauthorized")


# --- what they may do ---------------------------------------------------------------------


async def test_a_viewer_reads_but_cannot_submit_or_cancel(http, agent, users):
    token = await api_token(users["vera"])
    assert (await http.get("/hpc1/jobs/status", headers=bearer(token))).status_code == 200
    body = assert_error(await http.post("/hpc1/jobs/submit", headers=bearer(token), json={"x": 1}), 403, "forbidden")
    assert "read-only" in body["detail"]
    assert_error(await http.post("/hpc1/jobs/cancel/7", headers=bearer(token)), 403, "forbidden")
    assert [f["path"] for f in agent.frames] == ["status"]


async def test_users_directly_or_through_a_group_may_submit(http, agent, users):
    for name in ("uma", "gus", "olga"):
        r = await http.post("/hpc1/jobs/submit", headers=bearer(await api_token(users[name])), json={})
        assert r.status_code == 200, (name, r.text)
    roles = [f["caller"]["role"] for f in agent.frames]
    assert roles == ["user", "user", "owner"]


async def test_a_read_only_token_cannot_write_even_for_the_owner(http, agent, users):
    token = await api_token(users["olga"], scope=ApiToken.Scope.READ)
    assert (await http.get("/hpc1/jobs/status", headers=bearer(token))).status_code == 200
    body = assert_error(await http.post("/hpc1/jobs/submit", headers=bearer(token)), 403, "forbidden")
    assert "read-only" in body["detail"]
    # REST resources too: a read-only token may not suspend the edge it owns.
    assert_error(await http.post("/api/v1/edges/hpc1/suspend", headers=bearer(token)), 403, "forbidden")


async def test_a_stranger_cannot_tell_an_existing_edge_from_an_unknown_one(http, agent, users):
    token = await api_token(users["stranger"])
    hidden = await http.get("/hpc1/jobs/status", headers=bearer(token))
    unknown = await http.get("/hpc2/jobs/status", headers=bearer(token))
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json() == json.loads(unknown.text.replace("hpc2", "hpc1"))
    for path in ("/api/v1/edges/hpc1", "/api/v1/edges/hpc1/grants"):
        assert (await http.get(path, headers=bearer(token))).status_code == 404
    assert (await http.get("/edges", headers=bearer(token))).json() == {"edges": [], "total": 0}
    assert (await http.post("/edge/list", headers=bearer(token))).json()["data"]["edges"] == {}
    assert agent.frames == []


async def test_removing_a_grant_takes_effect_at_once(http, agent, users, edge):
    token = await api_token(users["uma"])
    assert (await http.get("/hpc1/jobs/status", headers=bearer(token))).status_code == 200
    await sync_to_async(services.grant_remove)(edge=edge.row, user=users["uma"])
    assert_error(await http.get("/hpc1/jobs/status", headers=bearer(token)), 404, "unknown_edge")


async def test_leaving_a_group_takes_effect_at_once(http, agent, users):
    token = await api_token(users["gus"])
    assert (await http.post("/hpc1/jobs/submit", headers=bearer(token))).status_code == 200
    await sync_to_async(users["gus"].groups.clear)()
    assert_error(await http.post("/hpc1/jobs/submit", headers=bearer(token)), 404, "unknown_edge")


# --- identity reaches the agent only from the bridge --------------------------------------

FORGED = {
    "X-Remote-User": "olga", "Remote-User": "olga", "X-Forwarded-User": "olga", "X-Auth-Request-User": "olga",
    "X-User": "olga", "X-Radical-User": "olga", "X-Radical-Caller": '{"uid": 1, "role": "admin"}',
    "Caller": "admin", "Cookie": "sessionid=stolen", "X-Forwarded-For": "10.0.0.1",
}


async def test_forged_identity_headers_change_nothing(http, agent, users):
    token = await api_token(users["vera"])
    r = await http.get("/hpc1/jobs/whoami", headers={**bearer(token), **FORGED})
    seen = r.json()
    assert seen["caller"] == {"user": "vera", "uid": users["vera"].pk, "role": "viewer", "scope": "full"}
    assert not {k.lower() for k in FORGED} & set(seen["headers"])
    assert "authorization" not in seen["headers"]
    # Forged headers do not turn a viewer into a user, nor an anonymous caller into anyone.
    assert_error(await http.post("/hpc1/jobs/submit", headers={**bearer(token), **FORGED}), 403, "forbidden")
    assert_error(await http.get("/hpc1/jobs/status", headers=FORGED), 401, "unauthorized")
    assert_error(await http.get("/api/v1/edges/", headers=FORGED), 401, "unauthorized")


# --- suspended edges ----------------------------------------------------------------------


async def test_suspending_disconnects_the_agent_and_refuses_calls(http, agent, users, edge):
    token = await api_token(users["olga"])
    r = await http.post("/api/v1/edges/hpc1/suspend", headers=bearer(token))
    assert r.status_code == 200 and r.json()["suspended"] is True
    await asyncio.wait_for(agent.task, 5)
    assert agent.others[-1]["type"] == "bye" and agent.others[-1]["reason"] == "suspended"
    assert agent.others[-1]["retry"] is False and agent.closed == 4004
    assert_error(await http.get("/hpc1/jobs/status", headers=bearer(token)), 503, "edge_suspended")
    r = await http.post("/api/v1/edges/hpc1/resume", headers=bearer(token))
    assert r.status_code == 200 and r.json()["suspended"] is False


async def test_audit_records_every_call_including_refusals(http, agent, users):
    token = await api_token(users["vera"])
    await http.get("/hpc1/jobs/status?x=1", headers={**bearer(token), "X-Request-ID": "req-42"})
    await http.post("/hpc1/jobs/submit", headers=bearer(token), content=b"12345")
    await http.get("/hpc1/jobs/status", headers=bearer("rda_wrong"))
    written = await audit.audit_flush()
    assert written == 3
    rows = await sync_to_async(list)(CallRecord.objects.order_by("id"))
    ok, refused, anonymous = rows
    assert (ok.username, ok.edge, ok.plugin, ok.method, ok.path, ok.status, ok.request_id) == (
        "vera", "hpc1", "jobs", "GET", "status", 200, "req-42")
    assert ok.uid == users["vera"].pk and ok.token_id is not None
    assert ok.duration_ms > 0 and ok.bytes_out > 0
    assert (refused.status, refused.method, refused.path) == (403, "POST", "submit")
    assert (anonymous.status, anonymous.username, anonymous.uid) == (401, "", None)


@override_settings(RADICAL_EDGE={"USER_RATE": 5, "USER_BURST": 3, "EDGE_RATE": 0})
async def test_rate_limited_calls_get_429_with_retry_after(http, agent, users):
    throttling.install()
    token = await api_token(users["uma"])
    statuses = [(await http.get("/hpc1/jobs/status", headers=bearer(token))).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    r = await http.get("/hpc1/jobs/status", headers=bearer(token))
    assert_error(r, 429, "rate_limited")
    assert r.headers["retry-after"] == "1"
    # Another user is not held back by uma's calls.
    assert (await http.get("/hpc1/jobs/status", headers=bearer(await api_token(users["olga"])))).status_code == 200
    await asyncio.sleep(0.25)  # 5 per second: one call's worth refills in 0.2 s
    assert (await http.get("/hpc1/jobs/status", headers=bearer(token))).status_code == 200


# --- no garbage cycles per call -----------------------------------------------------------


def _ours(obj) -> bool:
    module = getattr(obj, "__module__", None) if callable(obj) and not isinstance(obj, type) else type(obj).__module__
    return isinstance(module, str) and module.startswith(("bridge_app.", "edge_agent.", "radical_edge_site."))


async def test_a_proxied_call_leaves_no_reference_cycles_of_ours(http, agent, users):
    """The bridge runs full garbage collections rarely (core/collector.py): whatever a call
    leaves in a reference cycle stays until one runs, so a cycle per call grows memory with
    the calls (a self-re-arming timer closure did: 2 KB a call). Objects of the bridge's own
    types and functions must all be freed by reference counting."""
    import gc

    token = await api_token(users["uma"])
    for _ in range(5):  # caches filled, lazy imports done
        assert (await http.get("/hpc1/jobs/status", headers=bearer(token))).status_code == 200
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(20):
            assert (await http.get("/hpc1/jobs/status", headers=bearer(token))).status_code == 200
        assert_error(await http.get("/hpc1/jobs/nope", headers=bearer(token)), 404, "unknown_route")
        assert_error(await http.get("/hpc1/jobs/status", headers=bearer("rda_" + "x" * 43)), 401, "unauthorized")
        assert_error(await http.get("/hpc1/jobs/status", headers={**bearer(token), "Content-Length": "999999999999"}),
                     413, "payload_too_large")
        gc.collect()
        leftovers = [obj for obj in gc.garbage if _ours(obj)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert leftovers == [], sorted({getattr(o, "__qualname__", type(o).__qualname__) for o in leftovers})
