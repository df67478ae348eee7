"""rhapsody keeps finished tasks across agent restarts (issue 14): sessions end with the
agent, but what their tasks did stays readable, per owner, through the ``history`` routes."""

from __future__ import annotations

import json
from typing import Any

from edge_agent.host import PluginHost
from edge_agent.plugin import Caller, Request
from edge_agent.plugins.rhapsody import history
from edge_agent.plugins.rhapsody.plugin import RhapsodyPlugin

ALICE = Caller(user="alice", uid=1, role="user", scope="full")
BOB = Caller(user="bob", uid=2, role="user", scope="full")
OWNER = Caller(user="olga", uid=3, role="owner", scope="full")


async def call(plugin: RhapsodyPlugin, method: str, path: str, body: Any = None, caller: Caller = ALICE,
               query: str = "") -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    response = await plugin.handle(Request(method, path, query=query, body=raw, caller=caller))
    return response.status, json.loads(response.body) if response.body else None


async def ok(plugin, method, path, body=None, caller=ALICE, query=""):
    status, data = await call(plugin, method, path, body, caller, query)
    assert status == 200, (status, data)
    return data


async def started(state_dir) -> tuple[PluginHost, RhapsodyPlugin]:
    host = PluginHost([RhapsodyPlugin], state_dir=state_dir, config={"rhapsody": {}})
    await host.start()
    return host, host.plugins["rhapsody"]


async def test_finished_tasks_outlive_the_agent_and_stay_their_owners(tmp_path):
    host, plugin = await started(tmp_path / "state")
    try:
        sid = (await ok(plugin, "POST", "register_session", {"backends": ["concurrent"]}))["sid"]
        submitted = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [
            {"executable": "/bin/echo", "arguments": ["kept"], "name": "echo-kept"},
            {"function": "noop", "name": "noop-kept"}]})
        done = await ok(plugin, "POST", f"wait/{sid}", {"uids": [t["uid"] for t in submitted], "timeout": 60})
        assert {t["state"] for t in done} == {"DONE"}
    finally:
        await host.stop()

    host, plugin = await started(tmp_path / "state")  # the agent restarted: the session is gone
    try:
        assert (await call(plugin, "GET", f"list_tasks/{sid}"))[0] in (404, 410)
        kept = (await ok(plugin, "GET", "history"))["tasks"]
        assert {t["name"] for t in kept} == {"echo-kept", "noop-kept"}
        assert all(t["sid"] == sid and t["owner"] == "alice" and t["state"] == "DONE" for t in kept)
        echo = next(t for t in kept if t["name"] == "echo-kept")
        record = await ok(plugin, "GET", f"history/{sid}/{echo['uid']}")
        assert record["stdout"] == "kept\n" and record["exit_code"] == 0
        # Nobody else's; the edge's owner sees everyone's.
        assert (await ok(plugin, "GET", "history", caller=BOB))["tasks"] == []
        assert (await call(plugin, "GET", f"history/{sid}/{echo['uid']}", caller=BOB))[0] == 404
        assert len((await ok(plugin, "GET", "history", caller=OWNER))["tasks"]) == 2
        assert (await call(plugin, "GET", "history", query="limit=0"))[0] == 400
    finally:
        await host.stop()


def test_the_history_keeps_tails_and_small_values_and_rotates(tmp_path, monkeypatch):
    kept = history.summary({"uid": "task.000001", "state": "DONE", "stdout": "x" * 10_000, "stderr": None,
                            "return_value": list(range(5000))}, sid="s1", owner="alice")
    assert kept["stdout"].endswith("x" * history.OUTPUT_TAIL) and len(kept["stdout"]) < 5000
    assert kept["return_value"] == "[too large to keep]"
    monkeypatch.setattr(history, "MAX_FILE_BYTES", 2000)
    store = history.TaskHistory(tmp_path / "h")
    store.open()
    for i in range(100):
        store.add("u1", {"uid": f"task.{i:06d}", "sid": "s1", "finished": i, "stdout": "y" * 50})
    store.close()
    records = store.records("u1", limit=1000)
    assert records[-1]["uid"] == "task.000099" and 10 < len(records) < 100  # bounded, newest kept
    (tmp_path / "h" / "u1.jsonl").open("a").write('{"uid": "cut sh')  # a line a crash cut short
    assert store.records("u1", limit=1000)[-1]["uid"] == "task.000099"
