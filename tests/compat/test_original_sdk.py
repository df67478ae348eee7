"""Users of the original RADICAL Edge move over without rewriting: its SDK's calls, as its
examples make them, against a real bridge and agent (the client in ``original_client.py``),
and the same calls through our SDK's compatibility surface (``from radical.edge import …``)."""

from __future__ import annotations

import json
import platform
import threading
import warnings

import httpx
import pytest

from tests.support.live import wait_for

from .original_client import OriginalBridgeClient, url_with_token

pytestmark = pytest.mark.e2e

PLUGINS = "sysinfo,rhapsody,tests.plugins.echo:EchoPlugin"
DISK_TYPES = {"local ssd", "local hdd", "network", "unknown"}


def test_the_original_sdks_calls_answer_in_its_shapes_and_units(edge_setup):
    s = edge_setup(plugins=PLUGINS)
    bc = OriginalBridgeClient(url_with_token(s.bridge.url, s.token))
    try:
        notes: list[tuple[str, dict]] = []
        bc.register_callback(s.edge, "rhapsody", lambda topic, data: notes.append((topic, data)))
        assert bc.listening.wait(10)
        wait_for(lambda: bc.messages, 10, what="the first SSE message")
        first = bc.messages[0]
        assert first["topic"] == "topology" and s.edge in first["data"]["edges"]
        assert first["data"]["edges"][s.edge]["plugins"]["sysinfo"]["namespace"] == f"/{s.edge}/sysinfo"

        eids = bc.list_edges()
        assert eids[0] == s.edge
        ec = bc.get_edge_client(eids[0])
        assert {"sysinfo", "rhapsody", "echo"} <= set(ec.list_plugins())

        si = ec.get_plugin("sysinfo")
        metrics = si.get(f"metrics/{si.sid}")
        assert metrics["system"]["kernel"] == f"{platform.system()} {platform.release()}"
        assert metrics["cpu"]["percent"] > 0.0  # the first reading is real, not psutil's 0.0
        assert {d["type"] for d in metrics["disks"]} <= DISK_TYPES and metrics["disks"]
        assert all(n["ip"] and n["interface"] != "lo" and n["up"] is not False for n in metrics["network"])
        assert isinstance(metrics["gpus"], list)
        assert {"total", "available", "percent", "used"} <= set(metrics["memory"])

        assert si.get(f"echo/{si.sid}") == {"sid": si.sid, "echo": "hello"}
        assert si.get(f"echo/{si.sid}", q="hi there") == {"sid": si.sid, "echo": "hi there"}
        health = si.get("health")
        assert health["status"] == "healthy" and health["plugin"] == "sysinfo" and health["active_sessions"] >= 1
        assert si.sid in si.get("list_sessions")
        ui = si.get("ui_config")
        assert (ui["plugin_name"], ui["instance_name"]) == ("sysinfo", "sysinfo") and ui["ui"]["title"]

        rh = ec.get_plugin("rhapsody", backends=["concurrent"])
        acks = rh.post(f"submit/{rh.sid}", {"tasks": [
            {"executable": "/bin/echo", "arguments": ["one"]},
            {"executable": "/bin/sh", "arguments": ["-c", "exit 3"]},
        ]})
        assert [set(a) >= {"uid", "state"} for a in acks] == [True, True]
        done = rh.post(f"wait/{rh.sid}", {"uids": [a["uid"] for a in acks], "timeout": 30})
        assert [t["state"] for t in done] == ["DONE", "FAILED"]
        assert done[0]["stdout"] == "one\n" and done[0]["exit_code"] == 0 and done[0]["exception"] is None
        assert done[1]["exit_code"] == 3 and done[1]["exception"] == done[1]["error"]
        stats = rh.get(f"statistics/{rh.sid}")
        assert stats["tasks"]["by_state"]["DONE"] == 1

        # task_status as the original sent it: one notification per task, the task's own dict.
        uids = {a["uid"] for a in acks}
        wait_for(lambda: {d["uid"] for _, d in notes if d.get("state") in ("DONE", "FAILED")} >= uids,
                 15, what="task notifications in the original's shape")
        assert {topic for topic, _ in notes} == {"task_status"}
        final = {d["uid"]: d for _, d in notes if d["state"] in ("DONE", "FAILED")}
        assert final[acks[1]["uid"]]["exit_code"] == 3 and "exception" in final[acks[1]["uid"]]

        assert si.unregister_session() == {"ok": True}
        spec = bc.http.get("/openapi.json")
        assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")
        docs = bc.http.get("/docs")
        assert docs.status_code == 200 and "/openapi.json" in docs.text and "/edge/list" in docs.text
        assert bc.http.get("/redoc").status_code == 200
    finally:
        bc.close()


def test_our_sdk_answers_the_original_sdks_calls(edge_setup):
    from radical.edge import BridgeClient

    s = edge_setup(plugins="sysinfo,rhapsody,tests.plugins.echo:EchoPlugin")
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        eids = bc.list_edges()
        assert eids[0] == s.edge and s.edge in eids and "endpoint" in eids[s.edge]  # list and dict alike
        ec = bc.get_edge_client(s.edge.upper())  # the original accepted any spelling
        assert ec.list_plugins()["echo"]["namespace"] == f"/{s.edge}/echo"

        si = ec.get_plugin("sysinfo")
        sid = si.register_session()
        assert si.sid == sid and si.get_metrics()["system"]["kernel"].startswith(platform.system() + " ")
        si.unregister_session()

        got: list[tuple[str, dict]] = []
        both: list[tuple] = []
        arrived = threading.Event()
        with pytest.warns(DeprecationWarning):
            sub = bc.register_callback(s.edge, "echo", lambda topic, data: (got.append((topic, data)), arrived.set()))
        with pytest.warns(DeprecationWarning):
            other = ec.get_plugin("echo").register_notification_callback(lambda e, p, t, d: both.append((e, p, t, d)))
        assert sub.wait_connected(10) and other.wait_connected(10)
        events = bc.events(edge=s.edge, plugin="echo")  # subscribed now, not at the first next()
        bc.request("POST", f"/{s.edge}/echo/emit/2")
        first = next(events)
        assert (first["type"], first["topic"], first["data"]) == ("notification", "tick", {"i": 0})
        events.close()
        assert arrived.wait(10)
        wait_for(lambda: len(got) == 2 and len(both) == 2, 10, what="both legacy callbacks")
        assert got == [("tick", {"i": 0}), ("tick", {"i": 1})]
        assert both[0] == (s.edge, "echo", "tick", {"i": 0})
        assert bc.unregister_callback(s.edge, "echo", got.append) == 0  # not one we registered
        assert sub.running and bc.unregister_callback(s.edge, "echo", sub) == 1 and not sub.running

        rh = ec.get_plugin("rhapsody", backends=["concurrent"])
        rh.register_session(backends=["concurrent"])
        rh.run_tasks([{"executable": "/bin/true"}], timeout=30)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = rh.get_statistics()
        assert stats["tasks"]["by_state"]["DONE"] == 1
        assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_the_original_event_stream_on_request(edge_setup):
    """``?format=v0`` with our Bearer token gives the original's dialect too; without it, ours."""
    s = edge_setup()
    lines: list[str] = []
    ours: list[str] = []

    def read(params: dict, into: list[str]) -> None:
        with httpx.stream("GET", f"{s.bridge.url}/events", params=params, timeout=httpx.Timeout(10, read=30),
                          headers={"Authorization": f"Bearer {s.token}"}) as response:
            for line in response.iter_lines():
                into.append(line)
                if len(into) > 40:
                    return

    for params, into in (({"format": "v0", "edge": s.edge}, lines), ({"edge": s.edge}, ours)):
        threading.Thread(target=read, args=(params, into), daemon=True).start()
    wait_for(lambda: any(line.startswith("data: ") for line in lines) and any(x.startswith("retry") for x in ours), 10,
             what="both streams up")
    httpx.post(f"{s.bridge.url}/{s.edge}/echo/emit/1", headers={"Authorization": f"Bearer {s.token}"})
    wait_for(lambda: any('"notification"' in line for line in lines) and any("event: notification" in x for x in ours),
             10, what="the notification on both streams")
    assert not any(line.startswith(("id:", "event:")) for line in lines)
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert data[0]["topic"] == "topology" and s.edge in data[0]["data"]["edges"]
    tick = {"edge": s.edge, "plugin": "echo", "topic": "tick", "data": {"i": 0}}
    assert {"topic": "notification", "data": tick} in data
    assert any(x.startswith("id: ") for x in ours)  # our format stays the default


def test_an_original_agent_is_told_what_it_needs_and_held_off(bridge_factory):
    import asyncio

    import websockets

    bridge = bridge_factory(env={"RADICAL_OLD_AGENT_HOLD": "1.5"})

    async def original_agent() -> tuple[dict, int | None, str, float]:
        loop = asyncio.get_running_loop()
        async with websockets.connect(bridge.url.replace("http", "ws") + "/register") as ws:
            await ws.send('{"type": "register", "edge_name": "Polaris Login", "endpoint": {"type": "radical.edge"}}')
            await ws.send('{"type": "register", "edge_name": "Polaris Login", "plugin_name": "sysinfo", '
                          '"endpoint": {"type": "sysinfo", "namespace": "/Polaris Login/sysinfo"}}')
            frame = json.loads(await ws.recv())
            start = loop.time()
            try:
                await ws.recv()
            except websockets.ConnectionClosed as exc:
                return frame, exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else "", \
                    loop.time() - start
        raise AssertionError("the bridge did not close")

    frame, code, reason, held = asyncio.run(original_agent())
    # What the original logs: "[Edge] Registration error: <message>", and then it stops.
    assert frame["type"] == "error" and frame["error"] == "old_agent"
    assert "radical-edge-agent" in frame["message"] and "edge token" in frame["message"]
    assert "'Polaris Login'" in frame["message"] and "MIGRATING" in frame["message"]
    assert code == 4002 and "radical-edge-agent" in reason and "edge token" in reason
    assert held >= 1.0  # one that ignores the frame cannot come back at once
    assert "refused an old RADICAL Edge agent" in bridge.log()
