"""Issue 20, findings 5 and 10: what a viewer may start or probe, and how many sessions
anyone may hold.

* Opening a session that starts processes (rhapsody: threads, dask clusters) needs the
  user role; a viewer gets 403 from the bridge, and from the agent too if a call ever
  reaches it. Sessions that hold nothing (sysinfo, psij, queue_info) stay open to viewers,
  whose portal pages need them.
* Sessions are capped per user and per plugin, in the plugin framework (every plugin),
  with agent options ``PLUGIN.max_sessions_per_user`` / ``PLUGIN.max_sessions``; beyond
  them ``register_session`` answers 429 ``too_many_sessions`` naming the option.
* psij ``preview`` checks paths on the agent's host, so it needs the user role.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from edge_agent import cli
from edge_agent.host import PluginHost
from edge_agent.plugin import Caller, Plugin, Request, Session
from edge_agent.plugins.psij.plugin import PsijPlugin
from edge_agent.plugins.rhapsody.plugin import RhapsodyPlugin
from tests.support.live import ModuleSite

ALICE = Caller(user="alice", uid=1, role="user")
BOB = Caller(user="bob", uid=2, role="user")
CAROL = Caller(user="carol", uid=3, role="user")
VERA = Caller(user="vera", uid=4, role="viewer", scope="full")
READ_TOKEN = Caller(user="alice", uid=1, role="user", scope="read")


class Light(Plugin):
    """Sessions that hold nothing: viewers may open them."""

    name = "light"


class SlowSession(Session):
    started = 0

    async def start(self) -> None:
        # Stands for a backend that takes a while to come up (a dask cluster).
        for _ in range(5):
            await asyncio.sleep(0)
        SlowSession.started += 1


class Heavy(Plugin):
    """Sessions that start things: opening one needs the user role."""

    name = "heavy"
    session_class = SlowSession
    viewers_may_open_sessions = False


def routes(plugin: Plugin) -> dict[tuple[str, str], bool]:
    return {(r["method"], r["path"]): r["readonly"] for r in plugin.manifest()["routes"]}


async def call(host: PluginHost, plugin: str, method: str, path: str, caller: Caller = ALICE,
               body: object = None) -> tuple[int, dict]:
    raw = json.dumps(body).encode() if body is not None else b""
    resp = await host.dispatch(plugin, Request(method=method, path=path, caller=caller, body=raw))
    return resp.status, json.loads(resp.body)


@pytest.fixture
async def make_host(tmp_path):
    hosts: list[PluginHost] = []

    async def make(classes: list[type[Plugin]], **config: dict) -> PluginHost:
        host = PluginHost(classes, state_dir=tmp_path / f"state-{len(hosts)}", config=config, sweep_interval=3600)
        hosts.append(host)
        await host.start()
        return host

    yield make
    for host in hosts:
        await host.stop()


# -- the agent: which routes viewers may call ------------------------------------------------


def test_opening_a_session_that_starts_processes_is_not_a_read_only_route(tmp_path):
    host = PluginHost([Light, Heavy, RhapsodyPlugin, PsijPlugin], state_dir=tmp_path)
    assert routes(host.plugins["light"])[("POST", "register_session")] is True
    assert routes(host.plugins["heavy"])[("POST", "register_session")] is False
    # rhapsody's sessions start thread pools and, with dask, whole clusters of processes.
    assert routes(host.plugins["rhapsody"])[("POST", "register_session")] is False
    # psij's sessions hold nothing (jobs belong to users, not sessions): viewers' pages need them.
    assert routes(host.plugins["psij"])[("POST", "register_session")] is True
    # preview checks paths on the host (finding 10): not for viewers.
    assert routes(host.plugins["psij"])[("POST", "preview/{sid}")] is False


async def test_the_agent_refuses_viewers_and_read_only_tokens_on_routes_that_are_not_read_only(make_host):
    host = await make_host([Light, Heavy])
    for caller in (VERA, READ_TOKEN):
        status, body = await call(host, "heavy", "POST", "register_session", caller)
        assert status == 403 and body["error"] == "forbidden", body
        status, body = await call(host, "light", "POST", "register_session", caller)
        assert status == 200 and body["sid"]
    assert not host.plugins["heavy"].sessions
    status, body = await call(host, "heavy", "POST", "register_session", ALICE)
    assert status == 200 and body["sid"] in host.plugins["heavy"].sessions


async def test_a_viewer_gets_the_same_answer_from_preview_whatever_the_path(make_host):
    host = await make_host([PsijPlugin])
    status, body = await call(host, "psij", "POST", "register_session", VERA)
    assert status == 200
    sid = body["sid"]
    answers = set()
    for executable in ("/etc/shadow", "/no/such/file", "/bin/sh"):
        spec = {"executor": "local", "job_spec": {"executable": executable, "directory": "/root"}}
        status, body = await call(host, "psij", "POST", f"preview/{sid}", VERA, spec)
        answers.add((status, body["error"]))
    assert answers == {(403, "forbidden")}


# -- the agent: session caps ---------------------------------------------------------------


async def test_sessions_are_capped_per_user_and_per_plugin(make_host):
    host = await make_host([Light], light={"max_sessions_per_user": 2, "max_sessions": 3})
    plugin = host.plugins["light"]
    mine = [(await call(host, "light", "POST", "register_session", ALICE))[1]["sid"] for _ in range(2)]
    status, body = await call(host, "light", "POST", "register_session", ALICE)
    assert status == 429 and body["error"] == "too_many_sessions"
    assert "light.max_sessions_per_user" in body["detail"] and "2" in body["detail"]
    assert set(body) == {"error", "detail"}
    # Another user still has room, up to the plugin's limit.
    assert (await call(host, "light", "POST", "register_session", BOB))[0] == 200
    status, body = await call(host, "light", "POST", "register_session", CAROL)
    assert status == 429 and body["error"] == "too_many_sessions"
    assert re.search(r"light\.max_sessions\b", body["detail"]) and "3" in body["detail"]
    # Closing one makes room again.
    assert (await call(host, "light", "POST", f"unregister_session/{mine[0]}", ALICE))[0] == 200
    assert (await call(host, "light", "POST", "register_session", ALICE))[0] == 200
    # Sessions idle past their TTL do not count (they are swept on the spot).
    for session in plugin.sessions.values():
        session.last_used -= plugin.session_ttl + 1
    assert (await call(host, "light", "POST", "register_session", CAROL))[0] == 200
    assert len(plugin.sessions) == 1


async def test_concurrent_opens_cannot_overshoot_the_caps(make_host):
    host = await make_host([Heavy], heavy={"max_sessions_per_user": 2, "max_sessions": 3})
    answers = await asyncio.gather(*[call(host, "heavy", "POST", "register_session", ALICE) for _ in range(10)])
    assert sorted(status for status, _ in answers) == [200] * 2 + [429] * 8
    answers = await asyncio.gather(*[call(host, "heavy", "POST", "register_session", who)
                                     for who in (BOB, CAROL, BOB, CAROL)])
    assert sorted(status for status, _ in answers) == [200, 429, 429, 429]
    assert len(host.plugins["heavy"].sessions) == 3


def test_every_plugin_has_session_caps_by_default_and_bad_values_are_refused(tmp_path):
    host = PluginHost([Light, RhapsodyPlugin], state_dir=tmp_path)
    for plugin in host.plugins.values():
        assert 1 <= plugin.max_sessions_per_user <= plugin.max_sessions
    # Heavy sessions get tighter defaults.
    assert host.plugins["rhapsody"].max_sessions < host.plugins["light"].max_sessions
    for bad in (0, -1, "many", True, 1.5):
        with pytest.raises(ValueError, match=r"light\.max_sessions"):
            PluginHost([Light], state_dir=tmp_path, config={"light": {"max_sessions": bad}})



def test_session_caps_can_be_set_for_every_plugin_at_once(tmp_path):
    options = cli.parse_options(["*.max_sessions_per_user=3", "rhapsody.max_sessions_per_user=1", "*.max_sessions=9"])
    host = PluginHost([Light, RhapsodyPlugin], state_dir=tmp_path,
                      config=cli.plugin_config(options, [Light, RhapsodyPlugin]))
    light, rhapsody = host.plugins["light"], host.plugins["rhapsody"]
    assert (light.max_sessions_per_user, light.max_sessions) == (3, 9)
    assert (rhapsody.max_sessions_per_user, rhapsody.max_sessions) == (1, 9)  # its own option wins
    with pytest.raises(ValueError, match="poll_interval"):
        cli.plugin_config(cli.parse_options(["*.poll_interval=1"]), [Light])

async def test_rhapsody_takes_the_session_caps_as_options(make_host):
    host = await make_host([RhapsodyPlugin], rhapsody={"max_sessions_per_user": 1, "kill_grace": 1})
    assert host.plugins["rhapsody"].settings.kill_grace == 1  # its own options still apply
    status, body = await call(host, "rhapsody", "POST", "register_session", ALICE, {"backends": ["concurrent"]})
    assert status == 200, body
    status, body = await call(host, "rhapsody", "POST", "register_session", ALICE, {"backends": ["concurrent"]})
    assert status == 429 and "rhapsody.max_sessions_per_user" in body["detail"]


# -- end to end: a real bridge and agent ----------------------------------------------------

EDGE = "limits1"


@pytest.fixture(scope="module")
def site(tmp_path_factory, sqlite_template, request):
    site = ModuleSite(request, tmp_path_factory.mktemp("viewer-limits"), template=sqlite_template,
                      users=["olga", "vera", "uma"], api_tokens=["olga", "vera", "uma"], edge_tokens=[(EDGE, "olga")],
                      grants=[(EDGE, "vera", "viewer"), (EDGE, "uma", "user")])
    options = ["rhapsody.max_sessions_per_user=2", "rhapsody.max_sessions=3", "sysinfo.max_sessions_per_user=2",
               "rhapsody.backends=concurrent"]
    site.agent = site.agent_for(EDGE, plugins="sysinfo,rhapsody,psij", options=options)
    site.wait_online(EDGE, "olga")
    yield site
    site.close()


def client(site, who: str) -> httpx.Client:
    return site.bridge.client(site.tokens[who], timeout=60)


def close_all(c: httpx.Client, plugin: str) -> None:
    for s in c.get(f"/{EDGE}/{plugin}/list_sessions").json()["sessions"]:
        c.post(f"/{EDGE}/{plugin}/unregister_session/{s['sid']}")


@pytest.mark.e2e
def test_a_viewer_cannot_start_rhapsody_backends_but_keeps_its_pages(site):
    with client(site, "vera") as vera, client(site, "olga") as olga:
        for backends in (["dask"], ["concurrent"]):
            r = vera.post(f"/{EDGE}/rhapsody/register_session", json={"backends": backends})
            assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
        assert olga.get(f"/{EDGE}/rhapsody/list_sessions").json()["sessions"] == []
        # What the viewer's pages call still works: system info metrics, the rhapsody page's lists.
        sid = vera.post(f"/{EDGE}/sysinfo/register_session").json()["sid"]
        assert vera.get(f"/{EDGE}/sysinfo/metrics/{sid}").json()["cpu"]["cores_logical"] >= 1
        assert vera.get(f"/{EDGE}/rhapsody/list_sessions").status_code == 200
        assert vera.get(f"/{EDGE}/rhapsody/backends").status_code == 200
        close_all(vera, "sysinfo")


@pytest.mark.e2e
def test_sessions_beyond_the_caps_are_refused_with_429_naming_the_limit(site):
    with client(site, "uma") as uma, client(site, "olga") as olga, client(site, "vera") as vera:
        try:
            for _ in range(2):
                assert uma.post(f"/{EDGE}/rhapsody/register_session").status_code == 200
            r = uma.post(f"/{EDGE}/rhapsody/register_session")
            assert r.status_code == 429, r.text
            assert r.json()["error"] == "too_many_sessions"
            assert "rhapsody.max_sessions_per_user" in r.json()["detail"]
            assert olga.post(f"/{EDGE}/rhapsody/register_session").status_code == 200
            r = olga.post(f"/{EDGE}/rhapsody/register_session")
            assert r.status_code == 429 and re.search(r"rhapsody\.max_sessions\b", r.json()["detail"])
            # Viewers' resource-free sessions are capped too.
            for _ in range(2):
                assert vera.post(f"/{EDGE}/sysinfo/register_session").status_code == 200
            r = vera.post(f"/{EDGE}/sysinfo/register_session")
            assert r.status_code == 429 and "sysinfo.max_sessions_per_user" in r.json()["detail"]
        finally:
            close_all(olga, "rhapsody")
            close_all(vera, "sysinfo")


@pytest.mark.e2e
def test_a_viewer_cannot_probe_paths_through_the_psij_preview(site):
    with client(site, "vera") as vera, client(site, "uma") as uma:
        sid = vera.post(f"/{EDGE}/psij/register_session").json()["sid"]
        for executable in ("/etc/shadow", "/no/such/file"):
            r = vera.post(f"/{EDGE}/psij/preview/{sid}",
                          json={"executor": "local", "job_spec": {"executable": executable}})
            assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
        # The user who would submit the job still gets the preview, checks included.
        usid = uma.post(f"/{EDGE}/psij/register_session").json()["sid"]
        r = uma.post(f"/{EDGE}/psij/preview/{usid}",
                     json={"executor": "local", "job_spec": {"executable": "/bin/echo"}})
        assert r.status_code == 200 and r.json()["command"], r.text
        r = uma.post(f"/{EDGE}/psij/preview/{usid}",
                     json={"executor": "local", "job_spec": {"executable": "/no/such/file"}})
        assert r.status_code == 400 and r.json()["error"] == "invalid_job_spec"
        close_all(vera, "psij")
        close_all(uma, "psij")
