"""Several bridge processes on Redis and PostgreSQL, and the faults they must survive.

Every test here runs real bridge processes (uvicorn and daphne) on 127.0.0.1 sharing a
PostgreSQL database and Redis, real agents, and a small TCP load balancer in front.
"""

from __future__ import annotations

import concurrent.futures
import signal
import time

import httpx
import pytest

from tests.support.lb import TcpBalancer
from tests.support.live import start_all, wait_for
from tests.support.services import PrivatePostgres, PrivateRedis

# Fault tests: each starts a fleet, kills or restarts processes, Redis or PostgreSQL, and waits
# for recovery; on a loaded 2-core machine that took up to 70 s each (and more than the default).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def fleet(bridge_factory, n: int = 2, servers=("uvicorn", "daphne"), env: dict | None = None):
    """n bridge processes on the session's PostgreSQL + Redis, behind a load balancer."""
    bridges = start_all([bridge_factory("scaled", server=servers[i % len(servers)], env=env, start=False)
                         for i in range(n)])
    lb = TcpBalancer([b.port for b in bridges]).start()
    return bridges, lb


def holder(bridges, edge: str):
    """The bridge process whose log says it holds the edge's socket now."""
    for b in bridges:
        log = b.log()
        if log.rfind(f"edge {edge} connected") > log.rfind(f"edge {edge} disconnected"):
            return b
    return None


SERVERS = pytest.mark.parametrize("server", ["uvicorn", "daphne"])


def fleet_with_edge(bridge_factory, agent_factory, edge: str, lb_cleanup, server: str = "uvicorn") -> tuple[list, str]:
    """Two processes of ``server`` behind a balancer and an agent dialing through it; returns
    the bridges and an API token of the edge's owner once the edge is connected."""
    bridges, lb = fleet(bridge_factory, servers=(server,))
    lb_cleanup.append(lb)
    seeded = bridges[0].seed(users=["ann"], api_tokens=["ann"], edge_tokens=[(edge, "ann")])
    agent_factory(lb, seeded["edge"][edge], plugins="tests.plugins.echo:EchoPlugin")
    wait_for(lambda: holder(bridges, edge), 20, what="edge connected")
    return bridges, seeded["api"]["ann"]


@pytest.fixture
def lb_cleanup():
    balancers = []
    yield balancers
    for lb in balancers:
        lb.stop()


@pytest.mark.parametrize("layer", ["pubsub", "batched", "core"])
def test_an_edge_on_one_process_serves_requests_arriving_at_any_process(bridge_factory, agent_factory,
                                                                        unique_name, layer, lb_cleanup):
    bridges, lb = fleet(bridge_factory, env={"RADICAL_CHANNEL_LAYER": layer})
    lb_cleanup.append(lb)
    seeded = bridges[0].seed(users=["ann"], api_tokens=["ann"], edge_tokens=[(unique_name, "ann")])
    token = seeded["api"]["ann"]
    agent_factory(bridges[0], seeded["edge"][unique_name], plugins="tests.plugins.echo:EchoPlugin")
    wait_for(lambda: bridges[1].edge_online(token, unique_name), 20, what="edge online")
    for bridge in bridges:  # uvicorn and daphne, whichever holds the socket
        with bridge.client(token) as c:
            for i in range(5):
                r = c.post(f"/{unique_name}/echo/echo", content=f"via {bridge.port} #{i}".encode())
                assert r.status_code == 200 and r.content == f"via {bridge.port} #{i}".encode()


@SERVERS
def test_killed_process_its_edges_reconnect_elsewhere_and_its_calls_fail_fast(bridge_factory, agent_factory,
                                                                               unique_name, lb_cleanup, server):
    bridges, token = fleet_with_edge(bridge_factory, agent_factory, unique_name, lb_cleanup, server)
    victim = holder(bridges, unique_name)
    survivor = next(b for b in bridges if b is not victim)
    with survivor.client(token, timeout=60) as c, concurrent.futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(c.get, f"/{unique_name}/echo/sleep/30") for _ in range(3)]
        time.sleep(1.0)
        victim.kill()
        for fut in calls:
            r = fut.result(timeout=30)
            # Failed by the survivor once the victim stopped beating, not at the 60 s timeout.
            assert r.status_code == 502, r.text
            assert r.json()["error"] == "edge_disconnected"
        wait_for(lambda: c.get(f"/{unique_name}/echo/ping").status_code == 200, 30,
                 what="edge back through the survivor")
    assert holder([survivor], unique_name) is survivor


@SERVERS
def test_sigterm_drains_calls_in_flight_and_hands_edges_over(bridge_factory, agent_factory, unique_name,
                                                             lb_cleanup, server):
    bridges, token = fleet_with_edge(bridge_factory, agent_factory, unique_name, lb_cleanup, server)
    leaving = holder(bridges, unique_name)
    staying = next(b for b in bridges if b is not leaving)
    with staying.client(token, timeout=60) as c, concurrent.futures.ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(c.get, f"/{unique_name}/echo/sleep/3") for _ in range(3)]
        time.sleep(1.0)
        leaving.proc.send_signal(signal.SIGTERM)
        # The calls in flight on the leaving process's socket are answered, not failed.
        assert [f.result(timeout=60).json() for f in calls] == [{"slept": 3.0}] * 3
        # uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM.
        assert leaving.proc.wait(60) in (0, -signal.SIGTERM)
        wait_for(lambda: c.get(f"/{unique_name}/echo/ping").status_code == 200, 20, what="edge handed over")
    assert "drained 1 edge connection" in leaving.log() or "edge disconnected" in leaving.log()


def test_a_flood_on_one_edge_is_bounded_and_does_not_starve_others(bridge_factory, agent_factory, unique_name):
    bridge = bridge_factory(env={"RADICAL_EDGE_MAX_INFLIGHT": "20", "RADICAL_USER_RATE": "0",
                                 "RADICAL_EDGE_RATE": "0"})
    quiet = unique_name + "q"
    seeded = bridge.seed(users=["ann"], api_tokens=["ann"], edge_tokens=[(unique_name, "ann"), (quiet, "ann")])
    token = seeded["api"]["ann"]
    for name in (unique_name, quiet):
        agent_factory(bridge, seeded["edge"][name], plugins="tests.plugins.echo:EchoPlugin")
        wait_for(lambda n=name: bridge.edge_online(token, n), 20, what=f"{name} online")
    limits = httpx.Limits(max_connections=120)
    with bridge.client(token, timeout=60, limits=limits) as c, concurrent.futures.ThreadPoolExecutor(100) as pool:
        flood = [pool.submit(c.get, f"/{unique_name}/echo/sleep/4") for _ in range(60)]
        time.sleep(1.0)
        # A slow call does not hold up another on the same edge, nor calls to another edge.
        assert c.get(f"/{quiet}/echo/ping").json() == {"pong": True}
        quick_done_before_flood = not all(f.done() for f in flood)
        statuses = [f.result(timeout=60).status_code for f in flood]
    assert quick_done_before_flood
    assert statuses.count(200) == 20 and statuses.count(429) == 40  # the in-flight bound held
    with bridge.client(token) as c:
        assert c.get(f"/{unique_name}/echo/ping").status_code == 200  # and the edge recovered


@pytest.mark.skipif(not PrivateRedis.available(), reason="redis-server is not installed")
@SERVERS
def test_redis_restart_requests_fail_503_then_the_bridge_recovers_by_itself(bridge_factory, agent_factory,
                                                                            unique_name, scaled_backends, server):
    redis = PrivateRedis().start()
    try:
        holding, other = start_all([bridge_factory("scaled", server=server, env={"REDIS_URL": redis.url}, start=False)
                                    for _ in range(2)])
        seeded = holding.seed(users=["ann"], api_tokens=["ann"], edge_tokens=[(unique_name, "ann")])
        token = seeded["api"]["ann"]
        agent_factory(holding, seeded["edge"][unique_name], plugins="tests.plugins.echo:EchoPlugin")
        wait_for(lambda: other.edge_online(token, unique_name), 20, what="edge online")
        with other.client(token, timeout=30) as via_other, holding.client(token, timeout=30) as via_holder:
            assert via_other.get(f"/{unique_name}/echo/ping").status_code == 200
            redis.stop()
            # A call that must cross processes fails at once, clearly...
            r = via_other.get(f"/{unique_name}/echo/ping")
            assert r.status_code == 503 and r.json()["error"] == "bridge_unavailable"
            # ...while the process holding the edge still serves it (same-process delivery).
            assert via_holder.get(f"/{unique_name}/echo/ping").json() == {"pong": True}
            # A load balancer asking stops sending new callers to either process.
            ready = via_other.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["channel_layer"].startswith("error")
            redis.start()
            # Calls made while the layer recovers fail fast with 503 rather than hang.
            wait_for(lambda: via_other.get(f"/{unique_name}/echo/ping", timeout=15).status_code == 200, 60,
                     interval=0.5, what="bridge answering again after Redis came back")
            assert via_other.get("/readyz").status_code == 200
    finally:
        redis.stop()


@pytest.mark.skipif(not PrivatePostgres.available(), reason="needs root and PostgreSQL server binaries")
@SERVERS
def test_postgres_restart_cached_calls_go_on_misses_fail_503_then_recover(bridge_factory, agent_factory,
                                                                          unique_name, scaled_backends, server):
    pg = PrivatePostgres().init().start()
    try:
        pg.wait_ready()
        env = {"DATABASE_URL": pg.url, "RADICAL_CACHE_TTL": "3600"}
        bridge = bridge_factory("scaled", migrate=False, start=False, env=env, server=server)
        bridge.migrate()
        bridge.start()
        other = unique_name + "x"
        seeded = bridge.seed(users=["ann"], api_tokens=["ann"], edge_tokens=[(unique_name, "ann"), (other, "ann")])
        token = seeded["api"]["ann"]
        agent_factory(bridge, seeded["edge"][unique_name], plugins="tests.plugins.echo:EchoPlugin")
        wait_for(lambda: bridge.edge_online(token, unique_name), 20, what="edge online")
        with bridge.client(token, timeout=30) as c:
            assert c.get(f"/{unique_name}/echo/ping").status_code == 200  # now cached
            pg.stop()
            # The proxy path needs no database while its caches are warm...
            assert c.get(f"/{unique_name}/echo/ping").json() == {"pong": True}
            # ...and a miss is a clear 503, not a 500 or a hang. (Edges are loaded into the
            # cache ahead of their first call, so the miss is a name never looked up.)
            r = c.get(f"/{unique_name}y/echo/ping")
            assert r.status_code == 503 and r.json()["error"] == "bridge_unavailable"
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")
            pg.start()
            pg.wait_ready()
            # Loaded from the database again: an edge that never connected has no plugins.
            wait_for(lambda: c.get(f"/{unique_name}y/echo/ping").json()["error"] == "unknown_edge", 30,
                     what="database reachable again")
            assert c.get(f"/{other}/echo/ping").json()["error"] == "unknown_plugin"
            assert c.get("/edges").status_code == 200
            assert c.get("/readyz").status_code == 200
    finally:
        pg.destroy()
