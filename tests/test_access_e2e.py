"""Access control end to end: a real bridge process, real agents, real plugins.

One bridge and one agent serve the module (starting them is the slow part); tests that
change an edge's state use edges of their own.
"""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.support.live import AgentProcess, ModuleSite, wait_for

pytestmark = pytest.mark.e2e

EDGE = "shared1"
PLUGINS = "sysinfo,tests.plugins.echo:EchoPlugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory, sqlite_template, request):
    site = ModuleSite(request, tmp_path_factory.mktemp("access-e2e"), template=sqlite_template,
                      users=["olga", "vera", "uma", "stranger"], superusers=["root"],
                      api_tokens=["olga", "vera", "uma", "stranger", "root"], read_only_tokens=["olga"],
                      edge_tokens=[(EDGE, "olga")], grants=[(EDGE, "vera", "viewer"), (EDGE, "uma", "user")])
    site.agent = site.agent_for(EDGE, plugins=PLUGINS)
    site.wait_online(EDGE, "olga")
    yield site
    site.close()


def client(site, who: str) -> httpx.Client:
    return site.bridge.client(site.tokens[who])


def test_every_refusal_on_the_proxy_path(site):
    url = f"/{EDGE}/echo/echo"
    assert httpx.get(site.bridge.url + f"/{EDGE}/echo/ping").status_code == 401
    assert httpx.get(site.bridge.url + f"/{EDGE}/echo/ping", headers={"Authorization": "Bearer rda_x"}).status_code \
        == 401
    with client(site, "vera") as c:
        assert c.get(f"/{EDGE}/echo/ping").json() == {"pong": True}
        r = c.post(url, content=b"job")
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    with client(site, "olga-read") as c:
        assert c.get(f"/{EDGE}/echo/ping").status_code == 200
        assert c.post(url, content=b"job").status_code == 403
    with client(site, "uma") as c:
        assert c.post(url, content=b"job").content == b"job"
    with client(site, "stranger") as c:
        hidden, unknown = c.get(f"/{EDGE}/echo/ping"), c.get("/nosuchedge/echo/ping")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["error"] == unknown.json()["error"] == "unknown_edge"
        assert c.get("/edges").json()["total"] == 0


def test_forged_identity_headers_do_not_reach_the_agent(site):
    forged = {"X-Remote-User": "olga", "Remote-User": "olga", "X-Forwarded-User": "olga",
              "X-Radical-Caller": "admin", "Cookie": "sessionid=x"}
    with client(site, "vera") as c:
        seen = c.get(f"/{EDGE}/echo/whoami", headers=forged).json()
    assert seen["caller"]["user"] == "vera" and seen["caller"]["role"] == "viewer"
    assert not {k.lower() for k in forged} & set(seen["headers"])


def test_a_user_cannot_read_another_users_session(site):
    with client(site, "uma") as uma, client(site, "vera") as vera, client(site, "olga") as olga:
        sid = uma.post(f"/{EDGE}/sysinfo/register_session").json()["sid"]
        assert uma.get(f"/{EDGE}/sysinfo/metrics/{sid}").status_code == 200
        # Another user (a viewer here) gets the same 404 as for a session that never existed.
        theirs, none = vera.get(f"/{EDGE}/sysinfo/metrics/{sid}"), vera.get(f"/{EDGE}/sysinfo/metrics/nosuchsid")
        assert theirs.status_code == none.status_code == 404
        assert theirs.json()["error"] == none.json()["error"] == "unknown_session"
        assert vera.post(f"/{EDGE}/sysinfo/unregister_session/{sid}").status_code == 404
        assert sid not in [s["sid"] for s in vera.get(f"/{EDGE}/sysinfo/list_sessions").json()["sessions"]]
        # The edge's owner sees everything on the edge.
        assert sid in [s["sid"] for s in olga.get(f"/{EDGE}/sysinfo/list_sessions").json()["sessions"]]
        assert olga.get(f"/{EDGE}/sysinfo/metrics/{sid}").status_code == 200
        assert uma.post(f"/{EDGE}/sysinfo/unregister_session/{sid}").json() == {"ok": True}


def test_revoking_a_token_through_rest_refuses_it_at_once(site):
    token = site.bridge.api_token("uma")
    with site.bridge.client(token) as c:
        assert c.get(f"/{EDGE}/echo/ping").status_code == 200
        mine = next(t for t in c.get("/api/v1/tokens/").json() if token.startswith(t["prefix"]))
        assert c.delete(f"/api/v1/tokens/{mine['id']}").status_code == 204
        r = c.get(f"/{EDGE}/echo/ping")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_a_token_for_one_name_cannot_claim_another(site, tmp_path):
    squatter = site.bridge.edge_token("squatter1", owner="stranger")
    agent = AgentProcess(site.bridge.url, squatter, tmp_path, plugins="sysinfo", name=EDGE).start()
    try:
        wait_for(lambda: "not" in agent.log() and "belongs to edge 'squatter1'" in agent.log(), 20,
                 what="the squatter refused")
    finally:
        agent.stop()
    with client(site, "olga") as c:
        assert c.get(f"/{EDGE}/sysinfo/version").status_code == 200  # the real edge is untouched
    # Nor can a token be issued for an owned edge to someone else.
    result = site.bridge.manage("edge_token_create", EDGE, "--owner", "stranger", check=False)
    assert result.returncode != 0 and "already belongs to olga" in result.stderr


def test_suspending_drops_the_agent_and_resuming_lets_it_back(site, tmp_path):
    token = site.bridge.edge_token("susp1", owner="olga")
    agent = AgentProcess(site.bridge.url, token, tmp_path, plugins="sysinfo").start()
    try:
        wait_for(lambda: site.bridge.edge_online(site.tokens["olga"], "susp1"), 20, what="susp1 online")
        with client(site, "uma") as c:
            assert c.post("/api/v1/edges/susp1/suspend").status_code == 404  # not shared with uma
        with client(site, "olga") as c:
            assert c.post("/api/v1/edges/susp1/suspend").json()["suspended"] is True
            r = c.get("/susp1/sysinfo/version")
            assert r.status_code == 503 and r.json()["error"] == "edge_suspended"
            wait_for(lambda: "bridge said bye: suspended" in agent.log(), 10, what="agent told it was suspended")
            assert c.post("/api/v1/edges/susp1/resume").json()["suspended"] is False
            r = c.get("/susp1/sysinfo/version")
            assert r.status_code == 503 and r.json()["error"] == "edge_offline"
    finally:
        agent.stop()
    # A restarted agent connects again.
    agent = AgentProcess(site.bridge.url, token, tmp_path, plugins="sysinfo").start()
    try:
        wait_for(lambda: site.bridge.edge_online(site.tokens["olga"], "susp1"), 20, what="susp1 back online")
    finally:
        agent.stop()


def test_an_admin_disconnects_an_edge_and_the_agent_is_told_why(site, tmp_path):
    token = site.bridge.edge_token("kick1", owner="olga")
    agent = AgentProcess(site.bridge.url, token, tmp_path, plugins="sysinfo").start()
    try:
        wait_for(lambda: site.bridge.edge_online(site.tokens["olga"], "kick1"), 20, what="kick1 online")
        with client(site, "olga") as c:
            assert c.post("/api/v1/edges/kick1/disconnect").status_code == 403
        with client(site, "root") as c:
            r = c.post("/api/v1/edges/kick1/disconnect", json={"detail": "maintenance", "retry": False})
            assert r.json() == {"disconnected": True}
        wait_for(lambda: "maintenance" in agent.log(), 10, what="agent told why")
        assert "disconnected_by_admin" in agent.log()
    finally:
        agent.stop()


def test_calls_are_audited_and_written_at_shutdown(site):
    """Last: stops the module's bridge (SIGTERM), whose lifespan writes the buffer."""
    with client(site, "uma") as c:
        for i in range(3):
            c.get(f"/{EDGE}/echo/ping", headers={"X-Request-ID": f"audit-{i}"})
    with client(site, "stranger") as c:
        c.get(f"/{EDGE}/echo/ping", headers={"X-Request-ID": "audit-stranger"})
    site.agent.stop()
    site.bridge.stop(signal.SIGTERM)  # graceful: uvicorn runs the lifespan shutdown
    out = site.bridge.manage("shell", "-c", (
        "from bridge_app.models import CallRecord as C\n"
        "for r in C.objects.filter(request_id__startswith='audit-').order_by('request_id'):\n"
        "    print(r.request_id, r.username, r.edge, r.plugin, r.method, r.path, r.status, r.bytes_out > 0)\n"
        "from bridge_app.models import ActionRecord as A\n"
        "print(sorted(set(A.objects.values_list('action', flat=True))))\n")).stdout
    assert f"audit-0 uma {EDGE} echo GET ping 200 True" in out
    assert f"audit-2 uma {EDGE} echo GET ping 200 True" in out
    assert f"audit-stranger stranger {EDGE} echo GET ping 404" in out
    for action in ("edge_suspended", "edge_resumed", "edge_disconnected", "api_token_revoked", "grant_set"):
        assert action in out
