"""The proxy path end to end: a real bridge server process and real agent processes."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import signal
import time

import httpx
import pytest

from edge_agent.client import BridgeClient, EdgeOffline, EdgeTimeout, NotFound, PayloadTooLarge, Unauthorized
from tests.support.live import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["embedded", "scaled"])
def mode(request):
    return request.param


def test_edge_list_and_sysinfo_metrics_through_curl_shapes(edge_setup, mode):
    s = edge_setup(mode)
    with s.bridge.client(s.token) as c:
        listing = c.post("/edge/list").json()
        edge = listing["data"]["edges"][s.edge]
        assert edge["plugins"]["sysinfo"]["namespace"] == f"/{s.edge}/sysinfo"
        assert edge["plugins"]["echo"]["version"] == "0.1.0"
        assert listing["data"]["bridge"]["url"] == s.bridge.url
        edges = c.get("/edges").json()
        assert edges["total"] == 1 and edges["edges"][0]["connected"] is True
        sid = c.post(f"/{s.edge}/sysinfo/register_session").json()["sid"]
        metrics = c.get(f"/{s.edge}/sysinfo/metrics/{sid}").json()
        assert metrics["cpu"]["cores_logical"] == os.cpu_count()
        assert metrics["memory"]["total"] > 0
        assert metrics["system"]["hostname"]
        # The versioned twin of the proxy route answers the same.
        again = c.get(f"/api/v1/edges/{s.edge}/sysinfo/metrics/{sid}").json()
        assert again["memory"]["total"] == metrics["memory"]["total"]


def test_sdk_get_metrics(edge_setup):
    s = edge_setup()
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        assert s.edge in bc.list_edges()
        metrics = bc.get_edge_client(s.edge).get_plugin("sysinfo").get_metrics()
        assert {"system", "cpu", "memory", "disks", "network", "gpus"} <= set(metrics)
        with pytest.raises(NotFound) as exc:
            bc.get_edge_client("no-such-edge").get_plugin("sysinfo").get_metrics()
        assert exc.value.error == "unknown_edge"
    with pytest.raises(Unauthorized):
        BridgeClient(s.bridge.url, token="rda_wrong").list_edges()


def test_no_route_is_open_to_anonymous_callers(edge_setup):
    s = edge_setup()
    for method, path in [("POST", "/edge/list"), ("GET", "/edges"), ("GET", f"/{s.edge}/sysinfo/version"),
                         ("GET", "/api/v1/edges/"), ("GET", f"/api/v1/edges/{s.edge}/sysinfo/version"),
                         ("GET", "/api/v1/schema/")]:
        r = httpx.request(method, s.bridge.url + path)
        assert r.status_code in (401, 403), (path, r.status_code)
        assert r.json()["error"] in ("unauthorized", "forbidden", "not_authenticated")
        r = httpx.request(method, s.bridge.url + path, headers={"Authorization": "Bearer rda_nope"})
        assert r.status_code == 401, path


def test_unknown_edge_is_404_and_offline_edge_is_503_at_once(edge_setup):
    s = edge_setup()
    with s.bridge.client(s.token) as c:
        r = c.get("/nosuchedge/sysinfo/version")
        assert r.status_code == 404 and r.json()["error"] == "unknown_edge"
        r = c.get(f"/{s.edge}/nosuchplugin/version")
        assert r.status_code == 404 and r.json()["error"] == "unknown_plugin"
        assert s.agent.stop() == 0  # SIGTERM: the agent says bye and exits cleanly
        wait_for(lambda: not s.bridge.edge_online(s.token, s.edge), 10, what="edge offline")
        # At once: 503 edge_offline, not the 504 a call waiting for the edge would get.
        r = c.get(f"/{s.edge}/sysinfo/version")
        assert r.status_code == 503 and r.json()["error"] == "edge_offline"
        assert "not connected" in r.json()["detail"]


def test_timeout_is_504_and_the_agent_cancels_the_work(edge_setup):
    s = edge_setup()
    with s.bridge.client(s.token) as c:
        r = c.get(f"/{s.edge}/echo/sleep/30", headers={"X-Request-Timeout": "0.5"})
        assert r.status_code == 504 and r.json()["error"] == "edge_timeout"
        rid = r.headers["x-request-id"]
        assert rid
        record = wait_for(lambda: (lambda d: d if d["cancelled"] else None)(
            c.get(f"/{s.edge}/echo/cancelled").json()), 5, what="cancellation reached the plugin")
        assert len(record["cancelled"]) == 1 and record["cancelled"] == record["started"]
    with BridgeClient(s.bridge.url, token=s.token) as bc, pytest.raises(EdgeTimeout):
        bc.request("GET", f"/{s.edge}/echo/sleep/30", timeout=0.3)


def test_a_caller_that_gives_up_cancels_the_work_on_the_edge(edge_setup):
    """A call still waiting after DISCONNECT_WATCH_AFTER (1 s) watches for its caller: one
    that hangs up at 2.5 s has its work cancelled on the edge, long before the bridge's own
    timeout."""
    s = edge_setup()
    with s.bridge.client(s.token) as c:
        c.get(f"/{s.edge}/echo/ping")
        with pytest.raises(httpx.ReadTimeout), s.bridge.client(s.token, timeout=2.5) as impatient:
            impatient.get(f"/{s.edge}/echo/sleep/30")
        record = wait_for(lambda: (lambda d: d if d["cancelled"] else None)(
            c.get(f"/{s.edge}/echo/cancelled").json()), 10, what="cancellation reached the plugin")
        assert len(record["cancelled"]) == 1 and record["cancelled"] == record["started"]


def test_killed_agent_fails_its_inflight_requests_at_once_and_not_others(edge_setup, agent_factory,
                                                                                  unique_name):
    s = edge_setup()
    other = unique_name + "b"
    other_agent = agent_factory(s.bridge, s.bridge.edge_token(other, owner="owner"),
                                plugins="tests.plugins.echo:EchoPlugin")
    wait_for(lambda: s.bridge.edge_online(s.token, other), 20, what="second edge online")
    with concurrent.futures.ThreadPoolExecutor(8) as pool, s.bridge.client(s.token) as c:
        doomed = [pool.submit(c.get, f"/{s.edge}/echo/sleep/20") for _ in range(4)]
        survivor = pool.submit(c.get, f"/{other}/echo/sleep/1.5")
        time.sleep(0.5)
        killed_at = time.monotonic()
        s.agent.kill()
        for fut in doomed:
            # 502 edge_disconnected, not the 504 of their 60 s timeout (bench/soak_faults.py
            # measures how soon a killed agent's calls fail).
            r = fut.result(timeout=10)
            assert r.status_code == 502 and r.json()["error"] == "edge_disconnected"
        print(f"in-flight calls failed {time.monotonic() - killed_at:.2f} s after the kill")
        assert survivor.result(timeout=10).json() == {"slept": 1.5}
    other_agent.stop()


def test_bodies_are_byte_exact_and_oversized_ones_are_413(edge_setup):
    s = edge_setup()
    binary = bytes(range(256)) * 4096 * 8  # 8 MiB, every byte value
    text = ("grüße ✓ " * 300_000).encode("utf-8")[: 2 * 1024 * 1024]
    text = text[: len(text.decode("utf-8", "ignore").encode("utf-8"))]
    with s.bridge.client(s.token, timeout=60) as c:
        for payload, ctype in [(b"", "application/octet-stream"), (b"\x00\xff\x80", "application/octet-stream"),
                               (text, "text/plain; charset=utf-8"), (binary, "application/octet-stream")]:
            r = c.post(f"/{s.edge}/echo/echo", content=payload, headers={"content-type": ctype})
            assert r.status_code == 200
            assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(payload).hexdigest()
            assert r.headers["content-type"] == ctype
        r = c.get(f"/{s.edge}/echo/bytes/{5 * 1024 * 1024 + 3}")
        assert len(r.content) == 5 * 1024 * 1024 + 3
        assert hashlib.sha256(r.content).hexdigest() == r.headers["x-edge-sha256"]
        r = c.post(f"/{s.edge}/echo/digest", content=binary)
        assert r.json() == {"size": len(binary), "sha256": hashlib.sha256(binary).hexdigest()}
    with BridgeClient(s.bridge.url, token=s.token) as bc, pytest.raises(PayloadTooLarge) as exc:
        bc.request("POST", f"/{s.edge}/echo/echo", content=b"x" * (64 * 1024 * 1024 + 1))
    assert "limit" in exc.value.detail


def test_two_hundred_concurrent_requests_get_their_own_answers(edge_setup):
    s = edge_setup()

    def one(i: int) -> tuple[int, bytes]:
        r = c.post(f"/{s.edge}/echo/echo", content=f"payload-{i}".encode())
        return i, r.content

    with s.bridge.client(s.token, limits=httpx.Limits(max_connections=200)) as c, \
            concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(one, range(200)))
    assert all(body == f"payload-{i}".encode() for i, body in results)


def test_identity_reaches_the_agent_from_the_bridge_only(edge_setup):
    s = edge_setup()
    with s.bridge.client(s.token) as c:
        r = c.get(f"/{s.edge}/echo/whoami?x=1&y=2",
                  headers={"X-Radical-User": "root", "Cookie": "sessionid=abc", "X-Request-ID": "trace-42"})
    data = r.json()
    assert data["caller"]["user"] == "owner" and data["caller"]["role"] == "owner"
    assert "cookie" not in data["headers"] and "authorization" not in data["headers"]
    assert "x-radical-user" not in data["headers"]
    assert data["headers"]["x-request-id"] == "trace-42" and r.headers["x-request-id"] == "trace-42"
    assert data["query"] == "x=1&y=2"


def test_plugin_output_cannot_script_the_bridge_origin(edge_setup):
    s = edge_setup()
    with s.bridge.client(s.token) as c:
        r = c.get(f"/{s.edge}/echo/html")
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in r.headers


def test_agent_reconnects_after_the_bridge_restarts(edge_setup):
    s = edge_setup()
    s.bridge.stop()
    s.bridge.start()
    wait_for(lambda: s.bridge.edge_online(s.token, s.edge), 30, what="edge back after bridge restart")
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        assert bc.get_edge_client(s.edge).get_plugin("echo").call("GET", "ping") == {"pong": True}


def test_bad_tokens_are_refused_with_a_reason_and_no_tight_loop(bridge_factory, agent_factory, unique_name):
    # A CLI beside the embedded bridge cannot reach its in-memory layer: the revocation
    # takes effect at the connection's next heartbeat, made short here.
    bridge = bridge_factory(env={"RADICAL_HEARTBEAT_INTERVAL": "1"})
    good = bridge.edge_token(unique_name)
    cases = {
        "unknown edge token": "rde_" + "x" * 43,
        "this is not an edge token": "rda_" + "x" * 43,
    }
    agents = {reason: agent_factory(bridge, token) for reason, token in cases.items()}
    revoked = agent_factory(bridge, good)
    api = bridge.api_token("boss", "--create-user")
    bridge.manage("shell", "-c", "from django.contrib.auth.models import User; "
                  "User.objects.filter(username='boss').update(is_superuser=True)")
    wait_for(lambda: bridge.edge_online(api, unique_name), 20, what="good agent online")
    bridge.manage("edge_token_revoke", good[:12])
    wait_for(lambda: "token_revoked" in revoked.log(), 10, what="revoked agent told why")
    time.sleep(3)
    for reason, agent in agents.items():
        log = agent.log()
        assert reason in log, log
        # One attempt, then a long wait: no tight loop on a permanent refusal.
        assert log.count("bridge refused this agent") == 1, log
    assert not bridge.edge_online(api, unique_name)
    assert revoked.log().count("bridge refused this agent") == 1, revoked.log()


async def test_a_connection_without_token_is_told_why(bridge_factory):
    import websockets

    from edge_agent import protocol

    bridge = bridge_factory()
    async with websockets.connect(bridge.url.replace("http", "ws") + "/register") as ws:
        await ws.send(protocol.encode({"type": "hello", "protocol": 1, "agent_version": "x", "host": {},
                                       "plugins": []}))
        frame = protocol.decode(await ws.recv())
        assert frame["type"] == "bye" and frame["reason"] == "unauthorized" and frame["retry"] is False
        assert "no edge token" in frame["detail"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == protocol.CLOSE_UNAUTHORIZED


def test_agent_sigterm_says_bye_and_the_edge_goes_offline_at_once(edge_setup):
    s = edge_setup()
    s.agent.proc.send_signal(signal.SIGTERM)
    assert s.agent.proc.wait(10) == 0
    assert not s.bridge.edge_online(s.token, s.edge)


def test_offline_sdk_error_is_typed(edge_setup):
    s = edge_setup()
    s.agent.stop()
    with BridgeClient(s.bridge.url, token=s.token) as bc, pytest.raises(EdgeOffline):
        bc.get_edge_client(s.edge).get_plugin("echo").call("GET", "ping")


def test_agent_notices_a_dead_network_path_and_reconnects(bridge_factory, agent_factory, unique_name):
    from tests.support.lb import TcpBalancer

    bridge = bridge_factory(env={"RADICAL_HEARTBEAT_INTERVAL": "1"})
    seeded = bridge.seed(users=["ann"], api_tokens=["ann"], edge_tokens=[(unique_name, "ann")])
    token = seeded["api"]["ann"]
    lb = TcpBalancer([bridge.port]).start()
    try:
        agent = agent_factory(lb, seeded["edge"][unique_name], plugins="tests.plugins.echo:EchoPlugin")
        wait_for(lambda: bridge.edge_online(token, unique_name), 20, what="edge online")
        lb.blackhole_existing()  # the path dies silently: no FIN, no RST
        wait_for(lambda: agent.log().count("connected to") >= 2, 30, what="agent reconnected on a new path")
        assert "bridge silent" in agent.log()
        with bridge.client(token) as c:
            wait_for(lambda: c.get(f"/{unique_name}/echo/ping").status_code == 200, 20, what="edge usable again")
    finally:
        lb.stop()
