"""Plugin UI schemas checked when the agent starts (edge_agent.ui_schema), and the plugin test
client (edge_agent.testing) that plugin authors use."""

from __future__ import annotations

import logging

import pytest

from edge_agent.host import PluginHost
from edge_agent.plugin import Plugin, Request, route
from edge_agent.registry import load_plugins
from edge_agent.testing import CallFailed, PluginTestClient
from edge_agent.ui_schema import UISchemaError, route_problem, ui_schema_parse

GOOD = {
    "title": "Scratch", "icon": "hdd", "description": "Scratch file system",
    "forms": [{
        "id": "purge", "title": "Purge old files", "layout": "grid2",
        "fields": [{"name": "older_than_days", "type": "number", "label": "Older than (days)", "default": 30,
                    "required": True},
                   {"name": "mode", "type": "select", "options": ["dry-run", {"value": "real", "label": "Really"}]}],
        "submit": {"label": "Purge", "endpoint": "purge/{sid}", "method": "post"},
    }],
    "monitors": [{"id": "usage", "title": "Usage", "type": "table", "endpoint": "usage/{sid}",
                  "columns": ["path", {"key": "size", "label": "Size"}], "auto_load": True},
                 {"id": "log", "type": "raw", "auto_load": "log/{sid}"}],
    "notifications": [{"topic": "purge_started", "id_field": "path", "state_field": "status"}],
    "x_hint_for_newer_portals": {"anything": 1},
}


class Scratch(Plugin):
    name = "scratch"
    version = "1.0"
    ui_schema = GOOD

    @route("POST", "purge/{sid}")
    async def purge(self, request: Request, session) -> dict:
        days = request.json_object().get("older_than_days")
        self.emit("purge_started", {"path": "/scratch", "status": "running"}, owner=request.caller)
        return {"purged": 0, "older_than_days": days, "by": request.caller.user}

    @route("GET", "usage/{sid}")
    async def usage(self, request: Request, session) -> list:
        return [{"path": "/scratch", "size": 1}]

    @route("GET", "log/{sid}")
    async def log(self, request: Request, session) -> dict:
        return {"sid": session.sid}


class BadSchema(Scratch):
    name = "badschema"
    ui_schema = {"forms": [{"id": "f", "fields": [{"name": "when", "type": "date"}, {"type": "text"}],
                            "submit": {"endpoint": "../../api/v1/tokens/"}}],
                 "monitors": [{"id": "m", "type": "chart", "auto_load": 1}, {"id": "m"}]}


def test_a_good_schema_becomes_a_typed_structure():
    schema = ui_schema_parse(GOOD)
    form = schema.forms[0]
    assert (form.id, form.layout, form.submit.endpoint, form.submit.method) == ("purge", "grid2", "purge/{sid}", "POST")
    assert [f.type for f in form.fields] == ["number", "select"] and form.fields[0].required is True
    assert [(o.value, o.label) for o in form.fields[1].options] == [("dry-run", "dry-run"), ("real", "Really")]
    usage, log = schema.monitors
    assert [c.key for c in usage.columns] == ["path", "size"] and usage.auto_load is True
    assert log.endpoint == "log/{sid}"  # auto_load naming a route is the route to load
    assert schema.notifications[0].topic == "purge_started"


def test_every_mistake_is_reported_with_its_path():
    with pytest.raises(UISchemaError) as caught:
        ui_schema_parse(BadSchema.ui_schema, plugin="badschema")
    errors = dict(caught.value.errors)
    assert errors["forms[0].fields[0].type"].startswith("'date' is not one of text, select")
    assert errors["forms[0].fields[1].name"] == "is required"
    assert "leave the plugin" in errors["forms[0].submit.endpoint"]
    assert errors["monitors[0].type"].startswith("'chart' is not one of")
    assert errors["monitors[0].auto_load"] == "must be true, false or a route, not a number"
    assert errors["monitors[1].id"] == "monitor id 'm' is used twice"
    assert str(caught.value).startswith("plugin 'badschema': invalid UI schema: ")
    with pytest.raises(UISchemaError, match="ui_schema: must be an object, not a list"):
        ui_schema_parse([])


def test_the_agent_and_the_bridge_share_one_rule_for_urls_in_schemas():
    from bridge_app.agents import hello

    assert hello.route_problem is route_problem
    assert route_problem("list_jobs/{sid}/{queue}") is None
    assert route_problem("%2e%2e/x") and route_problem("https://evil.example/") and route_problem("a//b")


@pytest.mark.parametrize("spec", ["sysinfo", "psij", "queue_info", "rhapsody", "files",
                                  "tests.plugins.portal_demo:ScratchPlugin", "tests.plugins.portal_demo:HostilePlugin"])
async def test_the_built_in_plugins_schemas_are_valid(tmp_path, spec):
    async with PluginTestClient(*load_plugins([spec]), state_dir=tmp_path) as client:
        assert client.host.ui_schema_errors == {}


async def test_an_agent_with_a_bad_schema_keeps_the_plugin_and_shows_the_reason(tmp_path, caplog):
    host = PluginHost([BadSchema], state_dir=tmp_path)
    with caplog.at_level(logging.ERROR, logger="edge_agent.host"):
        await host.start()
    try:
        assert "forms[0].fields[0].type: 'date' is not one of" in caplog.text
        announced = host.manifest()[0]
        assert announced["ui_schema"]["refused"].startswith("refused by the agent: plugin 'badschema': invalid")
        assert announced["routes"]  # the routes still work
        sid = (await host.dispatch("badschema", Request("POST", "register_session"))).status
        assert sid == 200
    finally:
        await host.stop()


async def test_the_test_client_refuses_a_bad_schema_at_start(tmp_path):
    with pytest.raises(UISchemaError) as caught:
        async with PluginTestClient(BadSchema, state_dir=tmp_path):
            pass
    assert caught.value.plugin == "badschema" and len(caught.value.errors) >= 5


async def test_the_test_client_calls_routes_with_sessions_roles_and_events(tmp_path):
    async with PluginTestClient(Scratch, state_dir=tmp_path) as client:
        answer = await client.call("POST", "purge/{sid}", json={"older_than_days": 7})
        assert answer == {"purged": 0, "older_than_days": 7, "by": "alice"}
        # one session per caller, opened on first use
        assert (await client.call("GET", "log/{sid}"))["sid"] == await client.session()
        bob = client.user("bob", uid=2)
        assert await client.session(caller=bob) != await client.session()
        # a viewer may read but not change
        with pytest.raises(CallFailed) as refused:
            await client.call("POST", "purge/{sid}", json={}, caller=client.viewer)
        assert refused.value.status == 403 and refused.value.error == "forbidden"
        reply = await client.request("GET", "usage/{sid}", caller=client.viewer)
        assert reply.ok and reply.json() == [{"path": "/scratch", "size": 1}]
        assert [e["data"]["status"] for e in client.events("purge_started")] == ["running"]
        assert (await client.request("GET", "nope")).status == 404
