"""MCP pieces without processes: generated tool names, which job events a listener may
get, and the audit trail's view of MCP calls in Django admin."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

pytest.importorskip("mcp")

from bridge_app.core.directory import Principal
from bridge_app.mcp.follow import _job_uri
from bridge_app.mcp.plugins import tool_name
from bridge_app.models import CallRecord


def test_generated_tool_names_are_stable_and_distinct():
    assert tool_name("echo", "GET", "whoami") == "ext.echo.get.whoami"
    assert tool_name("echo", "GET", "sleep/{seconds}") == "ext.echo.get.sleep.seconds"
    assert tool_name("jobs", "GET", "list/{sid}") != tool_name("jobs", "GET", "list/{sid}/{queue}")
    assert tool_name("jobs", "POST", "list/{sid}") != tool_name("jobs", "GET", "list/{sid}")
    assert tool_name("we ird", "GET", "a b/../c") == "ext.we_ird.get.a_b._.c"


def test_a_rest_of_the_path_placeholder_is_one_argument_that_keeps_its_slashes():
    import asyncio

    from bridge_app.mcp import calls, plugins

    assert tool_name("files", "GET", "list/{path:path}") == "ext.files.get.list.path"
    entry = {"plugin": "files", "method": "GET", "path": "list/{path:path}", "readonly": True, "description": "",
             "edges": ["e1"]}
    entry["tool"] = plugins._tool("ext.files.get.list.path", entry)
    assert entry["tool"].input_schema["required"] == ["edge", "path"]
    seen = {}

    async def fake_call(caller, edge, plugin, method, path, **kwargs):
        seen.update(edge=edge, plugin=plugin, path=path)
        return {"ok": True}

    original = calls.plugin_call
    calls.plugin_call = fake_call
    try:
        asyncio.run(plugins.call_plugin_tool(None, entry, {"edge": "e1", "path": "home/alice/my data"}))
    finally:
        calls.plugin_call = original
    assert seen == {"edge": "e1", "plugin": "files", "path": "list/home/alice/my%20data"}


def _event(owner: int | None, job_id: str = "j1", topic: str = "job_status", edge: str = "hpc") -> dict:
    data = {"edge": edge, "plugin": "psij", "topic": topic, "data": {"job_id": job_id, "state": "ACTIVE"}}
    return {"kind": "notification", "edge": edge, "plugin": "psij", "topic": topic, "owner": owner,
            "json": json.dumps(data)}


def test_a_listener_gets_updates_of_its_own_jobs_or_of_edges_it_manages_only():
    uri = "radical-edge://jobs/hpc/j1"
    wanted = {("hpc", "j1"): uri}
    alice, bob = Principal(user_id=1, username="alice"), Principal(user_id=2, username="bob")
    assert _job_uri(_event(owner=1), wanted, {"hpc": "user"}, alice) == uri
    assert _job_uri(_event(owner=1), wanted, {"hpc": "viewer"}, bob) is None  # someone else's job
    assert _job_uri(_event(owner=1), wanted, {"hpc": "owner"}, bob) == uri  # the edge's owner sees all
    assert _job_uri(_event(owner=1), wanted, {}, alice) is None  # no role on the edge (any more)
    assert _job_uri(_event(owner=1, job_id="j2"), wanted, {"hpc": "user"}, alice) is None  # not subscribed
    assert _job_uri(_event(owner=1, topic="task_status"), wanted, {"hpc": "user"}, alice) is None


@pytest.mark.django_db
def test_admin_filters_calls_made_through_mcp(admin_client):
    now = timezone.now()
    CallRecord.objects.bulk_create([
        CallRecord(at=now, username="uma", token_id=3, edge="hpc1", plugin="psij", method="POST",
                   path="submit/SID-OF-AN-ASSISTANT", status=200, duration_ms=1.0,
                   client="mcp claude-code 2.1 tool=submit_job"),
        CallRecord(at=now, username="olga", token_id=7, edge="hpc1", plugin="sysinfo", method="GET",
                   path="metrics/SID-OF-A-PROGRAM", status=200, duration_ms=1.0),
    ])
    page = admin_client.get("/admin/bridge_app/callrecord/", {"via": "mcp"}).content.decode()
    assert "SID-OF-AN-ASSISTANT" in page and "SID-OF-A-PROGRAM" not in page and "API token, MCP" in page
    found = admin_client.get("/admin/bridge_app/callrecord/", {"q": "claude-code"}).content.decode()
    assert "SID-OF-AN-ASSISTANT" in found and "SID-OF-A-PROGRAM" not in found
