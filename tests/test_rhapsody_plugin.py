"""The rhapsody plugin driven directly (edge_agent.testing, real rhapsody backends, real processes)."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from edge_agent.plugin import Caller, Request
from edge_agent.plugins.rhapsody.plugin import RhapsodyPlugin
from edge_agent.testing import PluginTestClient

ALICE = Caller(user="alice", uid=1, role="user", scope="full")
BOB = Caller(user="bob", uid=2, role="user", scope="full")
FINAL = {"DONE", "FAILED", "CANCELED"}
HERE = "tests.test_rhapsody_plugin"


# Functions the tests register on the agent (plugin option ``functions``).

async def async_square(x: float) -> float:
    await asyncio.sleep(0)
    return x * x


def touch_and_sleep(path: str, seconds: float) -> str:
    Path(path).write_text("started")
    time.sleep(seconds)
    return path


def big_result(size: int) -> str:
    return "x" * size


@pytest.fixture
async def make_plugin(tmp_path):
    clients: list[PluginTestClient] = []

    async def make(**config: Any) -> RhapsodyPlugin:
        client = PluginTestClient(RhapsodyPlugin, state_dir=tmp_path / f"state-{len(clients)}", config=config)
        clients.append(client)
        await client.start()  # and checks the UI schema the plugin builds from its settings
        return client.plugins.get("rhapsody")  # None if it failed to start

    yield make
    for client in clients:
        await client.stop()


async def call(plugin: RhapsodyPlugin, method: str, path: str, body: Any = None,
               caller: Caller = ALICE, query: str = "") -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    response = await plugin.handle(Request(method, path, query=query, body=raw, caller=caller))
    return response.status, json.loads(response.body) if response.body else None


async def ok(plugin: RhapsodyPlugin, method: str, path: str, body: Any = None, caller: Caller = ALICE,
             query: str = "") -> Any:
    status, data = await call(plugin, method, path, body, caller, query)
    assert status == 200, (status, data)
    return data


async def open_session(plugin: RhapsodyPlugin, caller: Caller = ALICE, **params: Any) -> str:
    return (await ok(plugin, "POST", "register_session", params, caller))["sid"]


async def run(plugin: RhapsodyPlugin, sid: str, tasks: list[dict], timeout: float = 60) -> list[dict]:
    submitted = await ok(plugin, "POST", f"submit/{sid}", {"tasks": tasks})
    done = await ok(plugin, "POST", f"wait/{sid}", {"uids": [t["uid"] for t in submitted], "timeout": timeout})
    assert all(t["state"] in FINAL for t in done), done
    return done


async def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for PID 1 to reap it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def flushed(plugin: RhapsodyPlugin, sid: str) -> None:
    """Wait for the event batcher's timer to send what it holds."""
    await wait_until(lambda: not plugin.sessions[sid].batcher._pending, what="events flushed")


def task_events(plugin: RhapsodyPlugin) -> list[dict]:
    return [e for e in plugin.host.events if e["plugin"] == "rhapsody" and e["topic"] == "task_status"]


# -- running tasks -----------------------------------------------------------------------


async def test_executable_and_function_tasks_run_and_report_their_results(make_plugin, tmp_path):
    plugin = await make_plugin(functions=[f"{HERE}:async_square"])
    sid = await open_session(plugin, backends=["concurrent"])
    tasks = [
        {"executable": "/bin/echo", "arguments": ["hello", 42], "name": "greeting"},
        {"function": "add", "args": [1, 2, 3.5]},
        {"function": "echo", "args": ["a"], "kwargs": {"k": [1, 2]}},
        {"function": f"{HERE}:async_square", "args": [7]},
        # env is merged over the agent's environment: "sh" is still found on PATH.
        {"executable": "sh", "arguments": ["-c", "echo $RH_TEST_VAR; pwd"], "env": {"RH_TEST_VAR": "merged"},
         "cwd": str(tmp_path)},
        {"executable": "/usr/bin/env", "env": {"ONLY": "this"}, "inherit_env": False},
        {"executable": "echo $((6 * 7)) | tr 4 X", "shell": True},
    ]
    done = await run(plugin, sid, tasks)
    echo, add, echo_fn, square, env_merged, env_only, shell = done
    assert echo["state"] == "DONE" and echo["exit_code"] == 0 and echo["stdout"] == "hello 42\n"
    assert echo["name"] == "greeting" and echo["kind"] == "executable" and echo["pid"] > 0
    assert echo["started"] >= echo["submitted"] and echo["finished"] >= echo["started"]
    assert add["state"] == "DONE" and add["return_value"] == 6.5 and add["kind"] == "function"
    assert echo_fn["return_value"] == {"args": ["a"], "kwargs": {"k": [1, 2]}}
    assert square["return_value"] == 49
    assert env_merged["stdout"] == f"merged\n{tmp_path}\n"
    assert sorted(env_only["stdout"].split()) == sorted(["ONLY=this", f"PATH={os.environ['PATH']}"])
    assert shell["kind"] == "shell" and shell["stdout"] == "X2\n"
    # GET task answers the same dict.
    again = await ok(plugin, "GET", f"task/{sid}/{echo['uid']}")
    assert again == echo


async def test_failures_are_reported_with_their_cause(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    done = await run(plugin, sid, [
        {"executable": "sh", "arguments": ["-c", "echo oops >&2; exit 3"]},
        {"executable": "/nonexistent/tool"},
        {"function": "fail", "args": ["no luck"]},
        {"executable": "sh", "arguments": ["-c", "kill -9 $$"]},
        {"executable": "/bin/true", "cwd": "/nonexistent-dir"},
    ])
    exit3, missing, raised, killed, bad_cwd = done
    assert exit3["state"] == "FAILED" and exit3["exit_code"] == 3 and exit3["stderr"] == "oops\n"
    assert exit3["error"] == "exit code 3"
    assert missing["state"] == "FAILED" and missing["exit_code"] == 127
    assert missing["error"].startswith("FileNotFoundError") and "/nonexistent/tool" in missing["error"]
    assert raised["state"] == "FAILED" and raised["error"] == "RuntimeError: no luck"
    assert raised["stderr"].startswith("Traceback") and "in fail" in raised["stderr"]
    assert "backend.py" not in raised["stderr"]  # the user's frames, not the agent's
    assert killed["state"] == "FAILED" and killed["exit_code"] == -9 and killed["error"] == "killed by SIGKILL"
    assert bad_cwd["state"] == "FAILED" and "nonexistent-dir" in bad_cwd["error"]


async def test_wait_with_a_timeout_answers_the_current_states(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    fast, slow = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [
        {"executable": "/bin/true"}, {"executable": "sleep", "arguments": ["30"]}]})
    response = await plugin.handle(Request("POST", f"wait/{sid}", caller=ALICE,
                                           body=json.dumps({"uids": [fast, slow], "timeout": 0.5}).encode()))
    views = json.loads(response.body)
    assert response.status == 200 and response.headers["x-edge-tasks-pending"] == "1"
    assert [v["uid"] for v in views] == [fast["uid"], slow["uid"]]
    assert views[0]["state"] == "DONE" and views[1]["state"] == "RUNNING" and views[1]["exit_code"] is None
    # Without uids, wait covers all of the session's tasks.
    everything = await ok(plugin, "POST", f"wait/{sid}", {"timeout": 0})
    assert {v["uid"] for v in everything} == {fast["uid"], slow["uid"]}
    await ok(plugin, "POST", f"cancel/{sid}/{slow['uid']}")
    status, body = await call(plugin, "POST", f"wait/{sid}", {"uids": ["task.nope"], "timeout": 1})
    assert status == 404 and body["error"] == "unknown_task"
    status, body = await call(plugin, "POST", f"wait/{sid}", {"timeout": -1})
    assert status == 400


# -- cancel --------------------------------------------------------------------------------


async def test_cancel_kills_the_process_and_everything_it_started(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    [task] = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [
        {"executable": "sh", "arguments": ["-c", "sleep 300 & sleep 300; wait"]}]})
    uid = task["uid"]

    async def children() -> list[psutil.Process]:
        view = await ok(plugin, "GET", f"task/{sid}/{uid}")
        if view["pid"] is None:
            return []
        kids = psutil.Process(view["pid"]).children()
        return kids if len(kids) == 2 else []

    kids = await wait_until(children, what="the task's two sleeps")
    pid = (await ok(plugin, "GET", f"task/{sid}/{uid}"))["pid"]
    answer = await ok(plugin, "POST", f"cancel/{sid}/{uid}")
    assert answer["canceled"] is True and answer["was_running"] is True and answer["killed"] is True
    assert answer["signal"] == "SIGTERM" and answer["state"] == "CANCELED" and answer["pid"] == pid
    # The answer came after the kill: nothing of the task is left running.
    assert gone(pid) and all(gone(k.pid) for k in kids)
    view = await ok(plugin, "GET", f"task/{sid}/{uid}")
    assert view["state"] == "CANCELED" and view["error"] == "canceled: killed with SIGTERM"


async def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(make_plugin):
    plugin = await make_plugin(kill_grace=0.3)
    sid = await open_session(plugin)
    [task] = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [
        {"executable": "sh", "arguments": ["-c", "trap '' TERM; echo ready; sleep 300"]}]})
    await wait_until(lambda: plugin.sessions[sid].records[task["uid"]].run is not None
                     and plugin.sessions[sid].records[task["uid"]].run.stdout.total > 0, what="trap installed")
    answer = await ok(plugin, "POST", f"cancel/{sid}/{task['uid']}")
    assert answer["killed"] is True and answer["signal"] == "SIGKILL"
    assert gone(answer["pid"])


async def test_cancel_of_a_finished_task_says_it_had_finished(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    [done] = await run(plugin, sid, [{"executable": "/bin/true"}])
    answer = await ok(plugin, "POST", f"cancel/{sid}/{done['uid']}")
    assert answer["canceled"] is False and answer["was_running"] is False and answer["killed"] is False
    assert answer["state"] == "DONE" and "already finished" in answer["detail"]
    status, body = await call(plugin, "POST", f"cancel/{sid}/task.nope")
    assert status == 404 and body["error"] == "unknown_task"


async def test_cancel_of_a_queued_task_means_it_never_runs(make_plugin, tmp_path):
    plugin = await make_plugin(max_processes=1)
    sid = await open_session(plugin)
    marker = tmp_path / "ran"
    first, queued = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [
        {"executable": "sleep", "arguments": ["300"]},
        {"executable": "touch", "arguments": [str(marker)]}]})
    await wait_until(lambda: plugin.sessions[sid].records[first["uid"]].pid, what="first task running")
    view = await ok(plugin, "GET", f"task/{sid}/{queued['uid']}")
    assert view["state"] == "QUEUED"
    answer = await ok(plugin, "POST", f"cancel/{sid}/{queued['uid']}")
    assert answer["canceled"] is True and answer["was_running"] is False and answer["killed"] is False
    await ok(plugin, "POST", f"cancel/{sid}/{first['uid']}")
    view = await ok(plugin, "GET", f"task/{sid}/{queued['uid']}")
    assert view["state"] == "CANCELED" and view["started"] is None and view["pid"] is None
    assert not marker.exists()


async def test_cancel_of_functions_is_truthful(make_plugin, tmp_path):
    plugin = await make_plugin(functions=[f"{HERE}:touch_and_sleep"], max_workers=1)
    sid = await open_session(plugin)
    running_marker, queued_marker = tmp_path / "running", tmp_path / "queued"
    running, queued = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [
        {"function": f"{HERE}:touch_and_sleep", "args": [str(running_marker), 0.5]},
        {"function": f"{HERE}:touch_and_sleep", "args": [str(queued_marker), 0]}]})
    await wait_until(running_marker.exists, what="first function started")
    # A queued function is really canceled: it never runs.
    answer = await ok(plugin, "POST", f"cancel/{sid}/{queued['uid']}")
    assert answer["canceled"] is True and answer["was_running"] is False
    # A running one cannot be interrupted, and the answer says so.
    answer = await ok(plugin, "POST", f"cancel/{sid}/{running['uid']}")
    assert answer["canceled"] is False and answer["was_running"] is True and "cannot be interrupted" in answer["detail"]
    first, second = await ok(plugin, "POST", f"wait/{sid}", {"uids": [running["uid"], queued["uid"]], "timeout": 30})
    assert first["state"] == "DONE" and second["state"] == "CANCELED"
    assert not queued_marker.exists()


async def test_a_task_timeout_kills_it(make_plugin):
    plugin = await make_plugin(kill_grace=0.5)
    sid = await open_session(plugin)
    [view] = await run(plugin, sid, [{"executable": "sleep", "arguments": ["300"], "timeout": 0.3}])
    assert view["state"] == "FAILED" and view["error"] == "timed out after 0.3s" and view["exit_code"] == -15
    assert gone(view["pid"])


async def test_processes_left_behind_by_a_finished_task_are_killed(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    [view] = await run(plugin, sid, [{"executable": "sh", "arguments": ["-c", "sleep 300 >/dev/null & echo $!"]}])
    assert view["state"] == "DONE"
    # It got SIGKILL when the task's shell exited; dying takes the kernel a moment.
    await wait_until(lambda: gone(int(view["stdout"])), 5, what="the left-behind sleep gone")


# -- throttling and bounds -------------------------------------------------------------------


def max_overlap(log: Path) -> int:
    running = peak = 0
    for line in log.read_text().split():
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    return peak


async def test_executables_are_throttled_per_agent_and_per_session(make_plugin, tmp_path):
    plugin = await make_plugin(max_processes=3)
    log = tmp_path / "overlap.log"
    step = {"executable": "sh", "arguments": ["-c", f"echo start >> {log}; sleep 0.2; echo end >> {log}"]}
    one, two = await open_session(plugin), await open_session(plugin)
    stats = await ok(plugin, "GET", f"statistics/{one}")
    assert stats["processes"]["limit"] == 3 and stats["processes"]["limit_on_agent"] == 3
    # Two sessions with 5 tasks each share the agent's 3 process slots.
    first = await ok(plugin, "POST", f"submit/{one}", {"tasks": [step] * 5})
    second = await ok(plugin, "POST", f"submit/{two}", {"tasks": [step] * 5})
    await ok(plugin, "POST", f"wait/{one}", {"uids": first, "timeout": 60})
    await ok(plugin, "POST", f"wait/{two}", {"uids": second, "timeout": 60})
    assert 1 <= max_overlap(log) <= 3
    # A session may ask for fewer (never more) processes than the agent allows.
    log.unlink()
    capped = await open_session(plugin, max_processes=1)
    assert (await ok(plugin, "GET", f"statistics/{capped}"))["processes"]["limit"] == 1
    await run(plugin, capped, [step] * 4)
    assert max_overlap(log) == 1
    assert (await ok(plugin, "GET", f"statistics/{await open_session(plugin, max_processes=99)}"))[
        "processes"]["limit"] == 3


async def test_output_and_return_values_are_bounded(make_plugin):
    plugin = await make_plugin(max_output_bytes=1000, max_return_bytes=100, event_output_bytes=50,
                               functions=[f"{HERE}:big_result"])
    sid = await open_session(plugin)
    chatty, quiet, big, small = await run(plugin, sid, [
        {"executable": "sh", "arguments": ["-c", "echo BEGIN; head -c 5000000 /dev/zero | tr '\\0' x; echo; echo END"]},
        {"executable": "/bin/echo", "arguments": ["short"]},
        {"function": f"{HERE}:big_result", "args": [10_000]},
        {"function": f"{HERE}:big_result", "args": [10]},
    ])
    assert chatty["state"] == "DONE" and chatty["truncated"] == ["stdout"]
    assert chatty["stdout"].startswith("BEGIN\nxxx") and chatty["stdout"].endswith("xxx\nEND\n")
    assert "bytes truncated ...]" in chatty["stdout"] and len(chatty["stdout"]) < 1100
    assert quiet["truncated"] == [] and quiet["stdout"] == "short\n"
    assert big["state"] == "DONE" and big["return_value"] is None and big["truncated"] == ["return_value"]
    assert small["return_value"] == "x" * 10
    await flushed(plugin, sid)
    entries = {t["uid"]: t for e in task_events(plugin) for t in e["data"]["tasks"]}
    assert len(entries[chatty["uid"]]["stdout"]) < 120 and "stdout" in entries[chatty["uid"]]["truncated"]


# -- events -----------------------------------------------------------------------------------


async def test_ten_thousand_tasks_do_not_become_ten_thousand_events(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    submitted = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [{"function": "noop"}] * 10_000})
    done = await ok(plugin, "POST", f"wait/{sid}", {"uids": submitted, "timeout": 120})
    assert {t["state"] for t in done} == {"DONE"}
    await flushed(plugin, sid)
    events = task_events(plugin)
    assert len(events) <= 200
    final = {}
    for event in events:
        assert event["owner"] == ALICE.uid and event["data"]["sid"] == sid
        for entry in event["data"]["tasks"]:
            assert set(entry) >= {"uid", "state", "exit_code", "stdout", "stderr", "return_value", "error"}
            final[entry["uid"]] = entry["state"]
    assert len(final) == 10_000 and set(final.values()) == {"DONE"}
    stats = await ok(plugin, "GET", f"statistics/{sid}")
    assert stats["events"]["emitted"] == len(events)
    assert stats["tasks"]["by_state"]["DONE"] == 10_000 and stats["tasks"]["active"] == 0


async def test_events_report_running_and_final_states(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    [task] = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [{"executable": "sleep", "arguments": ["300"]}]})

    def states() -> list[str]:
        return [t["state"] for e in task_events(plugin) for t in e["data"]["tasks"] if t["uid"] == task["uid"]]

    await wait_until(lambda: states() == ["RUNNING"], what="RUNNING event")
    await ok(plugin, "POST", f"cancel/{sid}/{task['uid']}")
    await wait_until(lambda: states() == ["RUNNING", "CANCELED"], what="CANCELED event")


# -- code, shell and bad descriptions --------------------------------------------------------


async def test_pickled_code_is_refused_unless_the_admin_allows_it(make_plugin):
    cloudpickle = pytest.importorskip("cloudpickle")
    payload = base64.b64encode(cloudpickle.dumps(lambda x: x * 2)).decode()
    plugin = await make_plugin()
    sid = await open_session(plugin)
    status, body = await call(plugin, "POST", f"submit/{sid}", {"tasks": [{"function_pickle": payload, "args": [21]}]})
    assert status == 403 and body["error"] == "pickled_code_refused" and "allow_pickled" in body["detail"]
    assert (await ok(plugin, "GET", f"statistics/{sid}"))["tasks"]["submitted"] == 0
    trusting = await make_plugin(allow_pickled="true")
    sid = await open_session(trusting)
    [view] = await run(trusting, sid, [{"function_pickle": payload, "args": [21]}])
    assert view["state"] == "DONE" and view["return_value"] == 42 and view["label"].startswith("<pickled")


async def test_shell_tasks_can_be_disabled(make_plugin):
    plugin = await make_plugin(allow_shell=False)
    sid = await open_session(plugin)
    status, body = await call(plugin, "POST", f"submit/{sid}", {"tasks": [{"executable": "echo hi", "shell": True}]})
    assert status == 403 and body["error"] == "shell_disabled"
    kinds = next(f for f in plugin.ui_schema["forms"][0]["fields"] if f["name"] == "kind")["options"]
    assert "shell" not in kinds


@pytest.mark.parametrize("task, fragment", [
    ({"executable": ""}, "executable must be"),
    ({"executable": "/bin/echo", "arguments": [{"x": 1}]}, "arguments must be"),
    ({"executable": "/bin/echo", "function": "noop"}, "exactly one"),
    ({"executable": "/bin/echo", "argumnets": ["typo"]}, "unknown field(s) argumnets"),
    ({"executable": "/bin/echo", "env": {"A": None}}, "env value of A"),
    ({"executable": "/bin/echo", "timeout": -1}, "timeout must be"),
    ({"executable": "/bin/echo", "backend": "dask"}, "not one of this session's backends"),
    ({"function": "noop", "cwd": "/tmp"}, "belongs to executable tasks"),
    ({"function": "noop", "args": {"a": 1}}, "args must be a list"),
    ("not an object", "must be a JSON object"),
])
async def test_bad_task_descriptions_are_refused_whole(make_plugin, task, fragment):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    status, body = await call(plugin, "POST", f"submit/{sid}", {"tasks": [{"function": "noop"}, task]})
    assert status == 400 and body["error"] == "bad_task", body
    assert body["detail"].startswith("task 1: ") and fragment in body["detail"]
    assert (await ok(plugin, "GET", f"statistics/{sid}"))["tasks"]["submitted"] == 0


async def test_unknown_functions_and_oversized_calls_are_refused(make_plugin):
    plugin = await make_plugin(max_tasks_per_request=10)
    sid = await open_session(plugin)
    status, body = await call(plugin, "POST", f"submit/{sid}", {"tasks": [{"function": "os:system"}]})
    assert status == 400 and body["error"] == "unknown_function"
    status, body = await call(plugin, "POST", f"submit/{sid}", {"tasks": [{"function": "noop"}] * 11})
    assert status == 413 and body["error"] == "too_many_tasks"
    status, body = await call(plugin, "POST", f"submit/{sid}", {"nothing": 1})
    assert status == 400
    functions = await ok(plugin, "GET", "functions")
    names = {f["name"] for f in functions["functions"]}
    assert {"noop", "echo", "add", "sleep", "fail", "hostname"} <= names
    assert functions["allow_pickled"] is False


async def test_a_bad_function_entry_is_reported_not_fatal(make_plugin):
    plugin = await make_plugin(functions={"square": f"{HERE}:async_square", "broken": "no_such_module:fn"})
    functions = await ok(plugin, "GET", "functions")
    assert "square" in {f["name"] for f in functions["functions"]}
    assert "broken" in functions["errors"] and "ModuleNotFoundError" in functions["errors"]["broken"]


async def test_bad_options_disable_the_plugin_with_a_reason(make_plugin, caplog):
    with caplog.at_level(logging.ERROR):
        plugin = await make_plugin(max_procesess=4)
    assert plugin is None
    assert "unknown rhapsody option(s) max_procesess" in caplog.text


async def test_the_portal_form_submits_copies_of_one_task(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    form = {"kind": "executable", "executable": "/bin/echo", "arguments": "'two words' x", "function": "",
            "args": "", "cwd": "", "name": "from-form", "count": "3"}
    submitted = await ok(plugin, "POST", f"submit/{sid}", form)
    assert len(submitted) == 3
    done = await ok(plugin, "POST", f"wait/{sid}", {"uids": submitted, "timeout": 30})
    assert {(t["stdout"], t["name"]) for t in done} == {("two words x\n", "from-form")}
    form = {"kind": "function", "executable": "", "function": "add", "args": "[2, 3]", "count": 1}
    [task] = await ok(plugin, "POST", f"submit/{sid}", form)
    [view] = await ok(plugin, "POST", f"wait/{sid}", {"uids": [task], "timeout": 30})
    assert view["return_value"] == 5
    ui = await ok(plugin, "GET", "ui_config")
    assert ui["forms"][0]["submit"]["endpoint"] == "submit/{sid}"
    function_field = next(f for f in ui["forms"][0]["fields"] if f["name"] == "function")
    assert "noop" in function_field["options"]
    assert ui["monitors"][0]["type"] == "task_list" and ui["notifications"][0]["topic"] == "task_status"


async def test_a_retried_submit_with_an_idempotency_key_submits_once(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)

    async def submit(body: Any, key: str) -> tuple[int, Any]:
        response = await plugin.handle(Request("POST", f"submit/{sid}", body=json.dumps(body).encode(),
                                               headers={"idempotency-key": key}, caller=ALICE))
        return response.status, json.loads(response.body)

    body = {"tasks": [{"function": "add", "args": [1, 1]}, {"executable": "/bin/true"}]}
    status, first = await submit(body, "k-1")
    assert status == 200
    status, again = await submit(body, "k-1")
    assert status == 200 and [t["uid"] for t in again] == [t["uid"] for t in first]
    assert (await ok(plugin, "GET", f"statistics/{sid}"))["tasks"]["submitted"] == 2
    status, other = await submit({"tasks": [{"function": "noop"}]}, "k-1")
    assert status == 409 and other["error"] == "idempotency_conflict"
    # A refused call leaves the key free for the corrected retry.
    status, _ = await submit({"tasks": [{"function": "nope"}]}, "k-2")
    assert status == 400
    status, fixed = await submit({"tasks": [{"function": "noop"}]}, "k-2")
    assert status == 200 and len(fixed) == 1
    assert (await ok(plugin, "GET", f"statistics/{sid}"))["tasks"]["submitted"] == 3


async def test_health_tells_whether_rhapsody_works(make_plugin):
    plugin = await make_plugin()
    await plugin.rhapsody_modules()
    health = await ok(plugin, "GET", "health")
    assert health["status"] == "ok" and health["plugin"] == "rhapsody"
    assert health["rhapsody"]["available"] is True and health["rhapsody"]["version"].startswith("0.6")
    assert health["processes"]["running"] == 0


async def test_list_tasks_and_statistics(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin)
    await run(plugin, sid, [{"executable": "/bin/true"}, {"executable": "/bin/false"}, {"function": "noop"}])
    listing = await ok(plugin, "GET", f"list_tasks/{sid}")
    assert listing["total"] == 3 and [t["state"] for t in listing["tasks"]] == ["DONE", "FAILED", "DONE"]
    failed = await ok(plugin, "GET", f"list_tasks/{sid}", query="state=failed")
    assert failed["total"] == 1 and failed["tasks"][0]["exit_code"] == 1
    page = await ok(plugin, "GET", f"list_tasks/{sid}", query="offset=1&limit=1")
    assert len(page["tasks"]) == 1 and page["tasks"][0]["state"] == "FAILED"
    status, _ = await call(plugin, "GET", f"list_tasks/{sid}", query="state=BOGUS")
    assert status == 400
    stats = await ok(plugin, "GET", f"statistics/{sid}")
    assert stats["tasks"]["by_state"] == {"QUEUED": 0, "RUNNING": 0, "DONE": 2, "FAILED": 1, "CANCELED": 0}
    assert stats["backends"] == ["concurrent"] and stats["processes"]["running"] == 0


async def test_finished_tasks_beyond_the_session_limit_are_forgotten(make_plugin):
    plugin = await make_plugin(max_tasks_per_session=5)
    sid = await open_session(plugin)
    first = await run(plugin, sid, [{"function": "noop"}] * 5)
    await run(plugin, sid, [{"function": "noop"}] * 3)
    stats = await ok(plugin, "GET", f"statistics/{sid}")
    assert stats["tasks"]["retained"] == 5 and stats["tasks"]["forgotten"] == 3
    status, body = await call(plugin, "GET", f"task/{sid}/{first[0]['uid']}")
    assert status == 404 and "forgotten" in body["detail"]
    # rhapsody's own maps do not grow either.
    session = plugin.sessions[sid]
    assert len(session.rh._tasks) == 0 and len(session.backends["concurrent"].tasks) == 0
    status, body = await call(plugin, "POST", f"submit/{sid}", {"tasks": [{"function": "noop"}] * 6})
    assert status == 429 and body["error"] == "too_many_tasks"


# -- sessions -------------------------------------------------------------------------------


async def test_sessions_and_their_tasks_belong_to_their_caller(make_plugin):
    plugin = await make_plugin()
    sid = await open_session(plugin, ALICE)
    [task] = await run(plugin, sid, [{"executable": "/bin/true"}])
    uid = task["uid"]
    for method, path in [("POST", f"submit/{sid}"), ("POST", f"wait/{sid}"), ("GET", f"task/{sid}/{uid}"),
                         ("POST", f"cancel/{sid}/{uid}"), ("GET", f"statistics/{sid}"),
                         ("GET", f"list_tasks/{sid}"), ("POST", f"unregister_session/{sid}")]:
        status, body = await call(plugin, method, path, {"tasks": []} if method == "POST" else None, caller=BOB)
        assert status == 404 and body["error"] == "unknown_session", (path, status, body)
    assert (await ok(plugin, "GET", "list_sessions", caller=BOB))["sessions"] == []
    mine = (await ok(plugin, "GET", "list_sessions"))["sessions"]
    assert [s["sid"] for s in mine] == [sid] and mine[0]["tasks"] == 1
    # The edge's owner sees everything on the edge.
    owner = Caller(user="boss", uid=9, role="owner")
    assert (await ok(plugin, "GET", f"task/{sid}/{uid}", caller=owner))["state"] == "DONE"


async def test_expiry_and_unregister_kill_running_tasks(make_plugin):
    plugin = await make_plugin(kill_grace=1)
    expiring, closing = await open_session(plugin), await open_session(plugin)
    pids = {}
    for sid in (expiring, closing):
        [task] = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [
            {"executable": "sleep", "arguments": ["300"]}, {"executable": "sleep", "arguments": ["300"]}][:1]})
        rec = plugin.sessions[sid].records[task["uid"]]
        pids[sid] = await wait_until(lambda rec=rec: rec.pid, what="task running")
    plugin.sessions[closing].last_used = time.time() + 3600  # only the other one is idle
    assert await plugin.sweep_sessions(now=time.time() + plugin.session_ttl + 1) == 1
    assert gone(pids[expiring])
    status, body = await call(plugin, "GET", f"statistics/{expiring}")
    assert status == 410 and body["error"] == "session_expired"
    await ok(plugin, "POST", f"unregister_session/{closing}")
    assert gone(pids[closing])
    states = [t["state"] for e in task_events(plugin) for t in e["data"]["tasks"]]
    assert states.count("CANCELED") == 2
    # The backends are shut down and the session directories removed.
    assert not any(plugin.work_dir.iterdir())


async def test_unknown_backends_are_refused(make_plugin):
    plugin = await make_plugin(backends=["concurrent"])
    status, body = await call(plugin, "POST", "register_session", {"backends": ["warp"]})
    assert status == 400 and body["error"] == "unknown_backend"
    status, body = await call(plugin, "POST", "register_session", {"backends": ["dask"]})
    assert status == 403 and body["error"] == "backend_disabled"
    status, body = await call(plugin, "POST", "register_session", {"backends": []})
    assert status == 400
    info = await ok(plugin, "GET", "backends")
    assert info["backends"]["concurrent"] == {"available": True, "allowed": True,
                                              "detail": "threads and local processes"}
    assert info["backends"]["dask"]["allowed"] is False


HAVE_DASK = importlib.util.find_spec("dask") is not None and importlib.util.find_spec("distributed") is not None


@pytest.mark.skipif(not HAVE_DASK, reason="dask is not installed (pip install 'rhapsody-py[dask]')")
async def test_dask_backend_runs_functions_and_executables(make_plugin):
    plugin = await make_plugin(max_output_bytes=1000, dask={
        "n_workers": 1, "threads_per_worker": 3, "processes": False, "dashboard_address": None})
    assert (await ok(plugin, "GET", "backends"))["backends"]["dask"]["available"] is True
    sid = await open_session(plugin, backends=["concurrent", "dask"])
    done = await run(plugin, sid, [
        {"function": "add", "args": [20, 22], "backend": "dask"},
        {"executable": "/bin/echo", "arguments": ["from dask"], "backend": "dask"},
        {"function": "fail", "backend": "dask"},
        {"function": "add", "args": [1, 1]},
    ])
    add, echo, failed, local = done
    assert add["backend"] == "dask" and add["state"] == "DONE" and add["return_value"] == 42
    assert echo["state"] == "DONE" and echo["stdout"] == "from dask\n"
    assert failed["state"] == "FAILED" and failed["error"] == "RuntimeError: failed on purpose"
    assert local["backend"] == "concurrent" and local["return_value"] == 2
    stats = await ok(plugin, "GET", f"statistics/{sid}")
    assert stats["backends"] == ["concurrent", "dask"]
    assert stats["tasks"]["by_state"]["FAILED"] == 1 and stats["tasks"]["by_state"]["DONE"] == 3
    # Executables on dask are bounded and killable too.
    chatty, exit5 = await run(plugin, sid, [
        {"executable": "sh", "arguments": ["-c", "head -c 100000 /dev/zero"], "backend": "dask"},
        {"executable": "sh", "arguments": ["-c", "exit 5"], "backend": "dask"}])
    assert chatty["truncated"] == ["stdout"] and len(chatty["stdout"]) < 1100
    assert exit5["state"] == "FAILED" and exit5["exit_code"] == 5 and exit5["error"] == "exit code 5"
    session = plugin.sessions[sid]
    canceled, closed = await ok(plugin, "POST", f"submit/{sid}", {"tasks": [
        {"executable": "sleep", "arguments": ["300"], "backend": "dask"}] * 2})
    pids = await wait_until(lambda: [session.remote_pid(t["uid"]) for t in (canceled, closed)]
                            if all(session.remote_pid(t["uid"]) for t in (canceled, closed)) else None,
                            what="both sleeps running on dask")
    answer = await ok(plugin, "POST", f"cancel/{sid}/{canceled['uid']}")
    assert answer["canceled"] is True and answer["killed"] is True and answer["signal"] == "SIGTERM"
    assert gone(pids[0])
    await ok(plugin, "POST", f"unregister_session/{sid}")
    assert gone(pids[1])


WITHOUT_MODULES_SCRIPT = """
import asyncio, json, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # import name -> ImportError
from edge_agent.host import PluginHost
from edge_agent.plugin import Caller, Request
from edge_agent.plugins.rhapsody.plugin import RhapsodyPlugin

async def main():
    host = PluginHost([RhapsodyPlugin], state_dir=sys.argv[2])
    await host.start()
    plugin = host.plugins["rhapsody"]
    out = []
    for method, path, body in json.loads(sys.argv[3]):
        payload = json.dumps(body).encode() if body is not None else b""
        r = await plugin.handle(Request(method, path, body=payload, caller=Caller(user="a", uid=1)))
        out.append([r.status, json.loads(r.body)])
    await host.stop()
    print(json.dumps(out))

asyncio.run(main())
"""


def calls_without(modules: list[str], calls: list[tuple[str, str, Any]], state_dir: Path) -> list[list[Any]]:
    """``[status, body]`` of each ``(method, path, body)`` call to a rhapsody plugin in a
    separate interpreter in which ``modules`` cannot be imported, as on an agent without them."""
    result = subprocess.run([sys.executable, "-c", WITHOUT_MODULES_SCRIPT, ",".join(modules), str(state_dir),
                             json.dumps(calls)], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_missing_dask_is_reported_clearly(tmp_path):
    # CI installs dask (requirements.txt); agents often lack it. Tested without it in a
    # separate interpreter, so this branch runs wherever the suite runs.
    (_, info), (status, body) = calls_without(["dask", "dask.distributed", "distributed"], [
        ("GET", "backends", None), ("POST", "register_session", {"backends": ["dask"]})], tmp_path)
    assert info["backends"]["dask"]["available"] is False and "pip install" in info["backends"]["dask"]["detail"]
    assert info["backends"]["concurrent"]["available"] is True
    assert status == 501 and body["error"] == "backend_unavailable" and "rhapsody-py[dask]" in body["detail"]


def test_an_agent_without_rhapsody_says_how_to_install_it(tmp_path):
    (register, body), (health, status), (functions, _) = calls_without(["rhapsody"], [
        ("POST", "register_session", None), ("GET", "health", None), ("GET", "functions", None)], tmp_path)
    assert register == 501 and body["error"] == "rhapsody_missing" and "pip install" in body["detail"]
    assert health == 200 and status["status"] == "degraded" and status["rhapsody"]["available"] is False
    assert functions == 200


def test_the_sdk_client_needs_no_rhapsody():
    code = ("import sys; from edge_agent.client import BridgeClient; import edge_agent.plugins.rhapsody.client; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rhapsody', 'dask', 'distributed')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
