"""Issue 20, findings 1, 4 and 11: what a rogue agent may announce in its ``hello``.

A UI schema that names URLs outside its plugin is refused (the edge still connects); NUL
and control characters, and sizes over the limits, refuse the hello with a reason; and one
registration the database refuses never fails the others registered in the same batch.
The portal's own check of schema URLs is in test_hostile_ui_schema_browser.py, NUL hellos
against PostgreSQL in test_hostile_hello_postgres.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
import tempfile

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from bridge_app.agents import registrar
from bridge_app.agents.hello import HelloLimits, HelloRefused, hello_validate, route_problem
from bridge_app.domain import services
from bridge_app.models import Edge, PluginRegistration
from edge_agent import protocol
from radical_edge_site.asgi import application
from tests import test_consumer

pytestmark = pytest.mark.django_db(transaction=True)

ROUTES = [{"method": "GET", "path": "ping", "readonly": True}, {"method": "POST", "path": "do", "readonly": False},
          {"method": "GET", "path": "item/{sid}/{item_id}", "readonly": True}]

# How an escape was spelled in the attack, and the other spellings a browser or a server
# might resolve the same way.
ESCAPES = [
    "%2e%2e/%2e%2e/api/v1/tokens/",
    "%2E%2e/%2e%2E/api/v1/edges/alice-edge/grants",
    ".%2e/.%2e/api/v1/tokens/",
    "%252e%252e/%252e%252e/api/v1/tokens/",
    "ping/../../../api/v1/tokens/",
    "ping/%2e/x",
    "..\\..\\api\\v1\\tokens\\",
    "ping%5c..%5c..%5capi",
    "//attacker.example/steal",
    "/%2fattacker.example/steal",
    "https://attacker.example/steal",
    "javascript:alert(1)",
    ".\t./.\n./api/v1/tokens/",
    "ping#/../../x",
]


def ui_schema(**where: str) -> dict:
    """A plausible schema with hostile strings put where ``where`` says."""
    schema = {
        "title": "Rogue",
        "forms": [{"id": "f", "fields": [{"name": "q", "type": "select", "options_endpoint": "ping"}],
                   "submit": {"label": "Go", "endpoint": "do", "method": "POST"}}],
        "monitors": [{"id": "m", "type": "task_list", "endpoint": "ping", "auto_load": True,
                      "detail_endpoint": "item/{sid}/{item_id}", "cancel_endpoint": "do"}],
    }
    for key, value in where.items():
        if key in ("endpoint", "endpoint_without_q"):
            schema["forms"][0]["submit"][key] = value
        elif key == "options_endpoint":
            schema["forms"][0]["fields"][0][key] = value
        else:
            schema["monitors"][0][key] = value
    return schema


def hello(plugins: list | None = None, **overrides) -> dict:
    frame = {"type": "hello", "protocol": 1, "agent_version": "1.0", "host": {"hostname": "node1"},
             "plugins": plugins if plugins is not None else [{"name": "rogue", "version": "1", "routes": ROUTES}]}
    frame.update(overrides)
    return frame


fresh_layer_and_caches = test_consumer.fresh_layer_and_caches  # a fresh in-memory layer and caches
owner = test_consumer.owner
edge_token = test_consumer.edge_token


async def greet(token: str, frame: dict | str) -> tuple[WebsocketCommunicator, dict]:
    comm = WebsocketCommunicator(application, "/register", headers=[(b"authorization", f"Bearer {token}".encode())])
    assert (await comm.connect())[0]
    await comm.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))
    return comm, await comm.receive_json_from(timeout=10)


async def refused(token: str, frame: dict | str) -> dict:
    """The bye a hello gets; it must also close the socket with 4003 and leave the edge offline."""
    comm, bye = await greet(token, frame)
    assert bye["type"] == "bye", bye
    closed = await comm.receive_output(timeout=10)
    assert closed == {"type": "websocket.close", "code": protocol.CLOSE_BAD_HELLO}
    assert bye["reason"] == "bad_hello" and bye["retry"] is False
    assert not await sync_to_async(lambda: Edge.objects.get(name="hpc1").is_online)()
    return bye


def stored_schema(name: str = "rogue"):
    return PluginRegistration.objects.get(edge__name="hpc1", name=name).ui_schema


# --- finding 1: UI schemas that leave their plugin -------------------------------------------


@pytest.mark.parametrize("escape", ESCAPES)
@pytest.mark.parametrize("key", ["auto_load", "endpoint", "endpoint_without_q", "detail_endpoint",
                                 "cancel_endpoint", "options_endpoint"])
def test_a_schema_url_that_would_leave_the_plugin_is_refused(key, escape):
    frame = hello([{"name": "rogue", "version": "1", "routes": ROUTES, "ui_schema": ui_schema(**{key: escape})}])
    refused = hello_validate(frame)
    assert len(refused) == 1 and "rogue" in refused[0] and key in refused[0]
    assert frame["plugins"][0]["ui_schema"] == {"refused": refused[0].split("UI schema refused: ", 1)[1]}
    assert frame["plugins"][0]["routes"] == ROUTES  # the plugin itself stays usable


async def test_an_edge_whose_schema_is_refused_connects_and_the_agent_is_told_why(edge_token):
    schema = ui_schema(auto_load="%2e%2e/%2e%2e/api/v1/tokens/")
    schema["forms"][0]["submit"]["endpoint"] = "%2e%2e/%2e%2e/api/v1/edges/alice-edge/grants"
    comm, welcome = await greet(edge_token, hello([
        {"name": "rogue", "version": "1", "routes": ROUTES, "ui_schema": schema},
        {"name": "honest", "version": "1", "routes": ROUTES, "ui_schema": ui_schema()},
    ]))
    assert welcome["type"] == "welcome"
    notice = await comm.receive_json_from(timeout=10)
    assert notice["type"] == "error" and notice["error"] == "ui_schema_refused"
    assert "'rogue'" in notice["detail"] and "leave the plugin" in notice["detail"]
    rogue = await sync_to_async(stored_schema)("rogue")
    assert set(rogue) == {"refused"} and "%2e%2e" in rogue["refused"]
    assert await sync_to_async(stored_schema)("honest") == ui_schema()
    await comm.disconnect()


@pytest.mark.parametrize("path", ["../../api/v1/tokens", "%2e%2e/x", "a//b", "https://x/y", "a\\b", "x\u0000"])
async def test_a_route_that_is_not_a_plain_relative_path_refuses_the_hello(edge_token, path):
    bye = await refused(edge_token, hello([{"name": "rogue", "routes": [{"method": "GET", "path": path}]}]))
    assert "route path" in bye["detail"]


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\\b", "tab\tname"])
async def test_a_plugin_name_unusable_in_a_url_refuses_the_hello(edge_token, name):
    bye = await refused(edge_token, hello([{"name": name, "routes": ROUTES}]))
    assert "plugin name" in bye["detail"]


def test_the_built_in_plugins_announce_nothing_the_bridge_refuses():
    from edge_agent.host import PluginHost
    from edge_agent.registry import BUILTIN_PLUGINS, load_plugins

    manifest = PluginHost(load_plugins(list(BUILTIN_PLUGINS)), state_dir=tempfile.mkdtemp()).manifest()
    frame = hello(copy.deepcopy(manifest))
    assert hello_validate(frame) == []
    assert frame["plugins"] == manifest
    for good in ["ping", "/ping", "list_jobs/{sid}/{queue}", "files/{p:path}", "get?x=1", "a.b/..c/d..", "", "%41"]:
        assert route_problem(good) is None, good


# --- finding 4: NUL and control characters ----------------------------------------------------

NUL = "a\u0000b"


@pytest.mark.parametrize("where", ["agent_version", "name", "hostname", "fact value", "fact key", "nested fact",
                                   "plugin name", "plugin version", "description", "route path", "route method",
                                   "lone surrogate"])
async def test_a_hello_with_a_nul_is_refused_with_a_reason(edge_token, where):
    frame = hello()
    plugin = frame["plugins"][0]
    if where in ("agent_version", "name"):
        frame[where] = NUL
    elif where == "hostname":
        frame["host"]["hostname"] = NUL
    elif where == "fact value":
        frame["host"]["gpus"] = NUL
    elif where == "fact key":
        frame["host"][NUL] = 1
    elif where == "nested fact":
        frame["host"]["disks"] = [{"mounts": ["/", NUL]}]
    elif where == "plugin name":
        plugin["name"] = NUL
    elif where == "plugin version":
        plugin["version"] = NUL
    elif where == "description":
        plugin["description"] = NUL
    elif where == "route path":
        plugin["routes"] = [{"method": "GET", "path": NUL}]
    elif where == "route method":
        plugin["routes"] = [{"method": NUL, "path": "x"}]
    else:
        frame["host"]["hostname"] = "\ud800"
    text = json.dumps(frame)  # a lone surrogate travels as the escape "\ud800"
    bye = await refused(edge_token, text)
    assert "NUL" in bye["detail"] or "surrogate" in bye["detail"] or "control" in bye["detail"]


async def test_a_nul_inside_a_ui_schema_refuses_only_that_schema(edge_token):
    comm, welcome = await greet(edge_token, hello([{"name": "rogue", "routes": ROUTES,
                                                     "ui_schema": {"title": NUL, "monitors": []}}]))
    assert welcome["type"] == "welcome"
    assert "NUL" in (await sync_to_async(stored_schema)())["refused"]
    await comm.disconnect()


async def test_one_registration_the_database_refuses_does_not_fail_its_batch(monkeypatch, owner):
    """Whatever the database refuses (PostgreSQL: NUL in text), only that registration fails."""
    tokens = [await sync_to_async(services.edge_token_create)(name=f"e{i}", owner=owner) for i in range(6)]
    real = services.edges_register

    def fussy(*, requests):
        if any(r.hello.get("agent_version") == "poison" for r in requests):
            raise ValueError("A string literal cannot contain NUL (0x00) characters.")
        return real(requests=requests)

    monkeypatch.setattr(services, "edges_register", fussy)
    reg = registrar.Registrar()

    async def one(i: int, token: str):
        frame = hello(agent_version="poison" if i == 3 else "1.0")
        return await reg.register(token=token, channel_name=f"chan{i}", hello=frame)

    results = await asyncio.gather(*(one(i, token) for i, (_, token) in enumerate(tokens)), return_exceptions=True)
    refusals = [r for r in results if isinstance(r, services.EdgeRefused)]
    assert len(refusals) == 1 and results[3] is refusals[0] and refusals[0].reason == "bad_hello"
    assert all(isinstance(r, services.ConnectResult) for i, r in enumerate(results) if i != 3)
    online = await sync_to_async(lambda: sorted(e.name for e in Edge.objects.all() if e.is_online))()
    assert online == ["e0", "e1", "e2", "e4", "e5"]


# --- finding 11: sizes --------------------------------------------------------------------------


async def test_seven_mib_of_host_facts_are_refused(edge_token):
    bye = await refused(edge_token, hello(host={"hostname": "node1", "junk": "x" * (7 * 1024 * 1024)}))
    assert "host facts" in bye["detail"] and "64 KiB" in bye["detail"]
    assert "RADICAL_HELLO_MAX_FACTS_BYTES" in bye["detail"]


async def test_many_small_facts_count_as_much_as_one_large_one(edge_token):
    bye = await refused(edge_token, hello(host={f"k{i}": i for i in range(20_000)}))
    assert "host facts" in bye["detail"]


async def test_deeply_nested_facts_are_refused(edge_token):
    deep: dict = {}
    node = deep
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    bye = await refused(edge_token, hello(host={"hostname": "n", "deep": deep}))
    assert "deeper" in bye["detail"]


async def test_too_many_plugins_are_refused(edge_token):
    bye = await refused(edge_token, hello([{"name": f"p{i}", "routes": ROUTES} for i in range(65)]))
    assert "65 plugins" in bye["detail"] and "RADICAL_HELLO_MAX_PLUGINS" in bye["detail"]


async def test_too_many_routes_are_refused(edge_token):
    routes = [{"method": "GET", "path": f"r{i}"} for i in range(257)]
    bye = await refused(edge_token, hello([{"name": "rogue", "routes": routes}]))
    assert "257 routes" in bye["detail"] and "RADICAL_HELLO_MAX_ROUTES" in bye["detail"]


async def test_a_long_description_is_refused(edge_token):
    bye = await refused(edge_token, hello([{"name": "rogue", "routes": ROUTES, "description": "d" * 5000}]))
    assert "description" in bye["detail"] and "4096" in bye["detail"]


async def test_a_large_ui_schema_is_refused_and_the_edge_connects(edge_token):
    schema = {"title": "big", "monitors": [{"id": f"m{i}", "type": "raw", "endpoint": "ping"} for i in range(3000)]}
    comm, welcome = await greet(edge_token, hello([{"name": "rogue", "routes": ROUTES, "ui_schema": schema}]))
    assert welcome["type"] == "welcome"
    assert "RADICAL_HELLO_MAX_UI_SCHEMA_BYTES" in (await sync_to_async(stored_schema)())["refused"]
    await comm.disconnect()


async def test_a_hello_over_its_total_size_is_refused(edge_token):
    # Every part within its own limit, the whole over 1 MiB.
    plugins = [{"name": f"p{i}", "routes": ROUTES, "ui_schema": {"title": "t" * 60_000}} for i in range(20)]
    bye = await refused(edge_token, hello(plugins))
    assert "RADICAL_HELLO_MAX_BYTES" in bye["detail"]


def test_limits_come_from_the_settings(settings):
    settings.RADICAL_EDGE = {**settings.RADICAL_EDGE, "HELLO_MAX_FACTS_BYTES": 100, "HELLO_MAX_PLUGINS": 1}
    limits = HelloLimits.from_settings()
    assert (limits.facts_bytes, limits.plugins) == (100, 1)
    with pytest.raises(HelloRefused, match="host facts"):
        hello_validate(hello(host={"hostname": "n", "x": "y" * 200}))


def test_facts_stored_before_the_cap_do_not_bloat_the_edge_page(client, owner, edge_token):
    """A row written before hellos were capped, or by an agent now refused, keeps its facts:
    the edge page shows a bounded part of them."""
    facts = {"hostname": "node1", "junk": "x" * (7 * 1024 * 1024), **{f"k{i:05}": i for i in range(50_000)}}
    Edge.objects.filter(name="hpc1").update(facts=facts)
    client.force_login(owner)
    page = client.get("/edges/hpc1/")
    assert page.status_code == 200
    assert len(page.content) < 200_000
    assert b"more facts not shown" in page.content and b"node1" in page.content
