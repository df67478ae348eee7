"""The rhapsody plugin end to end: a real bridge, a real agent process, the SDK."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import psutil
import pytest

from edge_agent.client import BridgeClient, NotFound
from edge_agent.plugins.rhapsody.client import RhapsodyClient
from tests.support.live import ROOT, wait_for

pytestmark = pytest.mark.e2e


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sdk_submits_waits_cancels_and_counts_through_the_bridge(edge_setup):
    s = edge_setup(plugins="rhapsody")
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        ec = bc.get_edge_client(s.edge)
        with ec.get_plugin("rhapsody", backends=["concurrent"]) as rh:
            assert isinstance(rh, RhapsodyClient)
            assert rh.backends()["concurrent"]["available"] is True
            assert "noop" in {f["name"] for f in rh.functions()}
            # 2,000 tasks: the request and the answers are far over 64 KiB (chunked bodies).
            tasks = [{"function": "add", "args": [i, i]} for i in range(1000)]
            tasks += [{"executable": "/bin/echo", "arguments": [f"line {i}"]} for i in range(1000)]
            submitted = rh.submit_tasks(tasks)
            assert len(submitted) == 2000 and all(t["state"] in ("QUEUED", "RUNNING", "DONE") for t in submitted)
            done = rh.wait_tasks(submitted, timeout=120)
            assert [t["uid"] for t in done] == [t["uid"] for t in submitted]
            assert {t["state"] for t in done} == {"DONE"}
            assert [t["return_value"] for t in done[:1000]] == [2 * i for i in range(1000)]
            assert [t["stdout"] for t in done[1000:]] == [f"line {i}\n" for i in range(1000)]

            # A submit retried with its idempotency key (a lost answer, say) runs once.
            once = rh.submit_tasks([{"function": "noop"}], idempotency_key="retry-me")
            again = rh.submit_tasks([{"function": "noop"}], idempotency_key="retry-me")
            assert [t["uid"] for t in again] == [t["uid"] for t in once]
            rh.wait_tasks(once, timeout=60)

            [failing] = rh.run_tasks([{"executable": "sh", "arguments": ["-c", "exit 7"]}], timeout=60)
            assert failing["state"] == "FAILED" and failing["exit_code"] == 7

            [sleeper] = rh.submit_tasks([{"executable": "sleep", "arguments": ["300"]}])
            [still] = rh.wait_tasks([sleeper], timeout=0.3)
            assert still["state"] in ("QUEUED", "RUNNING")
            with s.bridge.client(s.token) as c:  # the REST shape, as curl sees it
                r = c.post(f"/{s.edge}/rhapsody/wait/{rh.sid}", json={"uids": [sleeper["uid"]], "timeout": 0.1})
                assert r.status_code == 200 and r.headers["x-edge-tasks-pending"] == "1"
                assert r.json()[0]["uid"] == sleeper["uid"]
            pid = wait_for(lambda: rh.get_task(sleeper)["pid"], 10, what="sleeper started")
            answer = rh.cancel_task(sleeper)
            assert answer["canceled"] is True and answer["killed"] is True and answer["signal"] == "SIGTERM"
            assert gone(pid)
            again = rh.cancel_task(sleeper)
            assert again["canceled"] is False and "already finished" in again["detail"]

            stats = rh.statistics()
            assert stats["tasks"]["submitted"] == 2003
            assert stats["tasks"]["by_state"] == {"QUEUED": 0, "RUNNING": 0, "DONE": 2001, "FAILED": 1,
                                                  "CANCELED": 1}
            listing = rh.list_tasks(state="FAILED")
            assert listing["total"] == 1 and listing["tasks"][0]["uid"] == failing["uid"]
            with pytest.raises(NotFound) as exc:
                rh.get_task("task.nope")
            assert exc.value.error == "unknown_task"
            sid = rh.sid
        # Closing the client unregistered the session: its tasks are gone with it.
        with s.bridge.client(s.token) as c:
            r = c.get(f"/{s.edge}/rhapsody/statistics/{sid}")
            assert r.status_code == 404 and r.json()["error"] == "unknown_session"
    # The example a user points at their own bridge.
    env = {**os.environ, "RADICAL_BRIDGE_URL": s.bridge.url, "RADICAL_API_TOKEN": s.token,
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "rhapsody_tasks.py"), s.edge, "--count", "300",
                             "--batch", "128"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "300 of 300 task(s) succeeded" in result.stdout and "300/300" in result.stderr
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "rhapsody_tasks.py"), s.edge, "--count", "2",
                             "--", "sh", "-c", "exit 4"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "exit code 4" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="dask is not installed")
def test_dask_backend_in_a_real_agent(edge_setup):
    # The agent's default dask options: a LocalCluster with worker processes.
    s = edge_setup(plugins="rhapsody")
    with BridgeClient(s.bridge.url, token=s.token) as bc, \
            bc.get_edge_client(s.edge).get_plugin("rhapsody", backends=["dask"]) as rh:
        add, echo = rh.run_tasks([{"function": "add", "args": [40, 2]},
                                  {"executable": "/bin/echo", "arguments": ["on a worker"]}], timeout=120)
        assert (add["state"], add["return_value"], add["backend"]) == ("DONE", 42, "dask")
        assert (echo["state"], echo["stdout"]) == ("DONE", "on a worker\n")
        [sleeper] = rh.submit_tasks([{"executable": "sleep", "arguments": ["300"]}])
        pid = wait_for(lambda: rh.get_task(sleeper)["pid"], 30, what="the sleep running on a dask worker")
        answer = rh.cancel_task(sleeper)
        assert answer["canceled"] is True and answer["killed"] is True and answer["pid"] == pid
        assert gone(pid) and rh.get_task(sleeper)["state"] == "CANCELED"


def test_another_user_of_the_edge_cannot_reach_a_session(edge_setup):
    s = edge_setup(plugins="rhapsody")
    s.bridge.create_user("mallory")
    s.bridge.manage("edge_grant", s.edge, "mallory", "user")
    other = s.bridge.api_token("mallory")
    s.bridge.wait_edge_visible(other, s.edge)
    with BridgeClient(s.bridge.url, token=s.token) as bc, BridgeClient(s.bridge.url, token=other) as mc:
        rh = bc.get_edge_client(s.edge).get_plugin("rhapsody")
        [task] = rh.run_tasks([{"function": "noop"}], timeout=60)
        theirs = mc.get_edge_client(s.edge).get_plugin("rhapsody")
        # mallory may use the edge and the plugin, but not alice's session or its tasks.
        [own] = theirs.run_tasks([{"function": "add", "args": [1, 2]}], timeout=60)
        assert own["return_value"] == 3
        for method, route in [("GET", f"task/{rh.sid}/{task['uid']}"), ("POST", f"cancel/{rh.sid}/{task['uid']}"),
                              ("GET", f"statistics/{rh.sid}")]:
            with pytest.raises(NotFound) as exc:
                mc.get_edge_client(s.edge).request(method, "rhapsody", route)
            assert exc.value.error == "unknown_session"
        assert rh.sid not in {x["sid"] for x in theirs.list_sessions()}
        rh.close()
        theirs.close()
