"""Events through the bridge: agent ``event`` frames in, persisted, out to SSE subscribers.

    python -m bench.events                                   # embedded, simulated agent, 1 subscriber
    python -m bench.events --events 50000 --subscribers 4
    python -m bench.events --source agent                    # a real agent (echo plugin's emit/{n})
    python -m bench.events --mode scaled                     # PostgreSQL + Redis
    python -m bench.events --mode scaled --bridges 2         # an edge on each of two processes

Starts a bridge on 127.0.0.1 and SSE subscribers (raw HTTP streams, in one asyncio process),
then sends ``--events`` events from one edge as fast as the source can: a simulated agent
(a WebSocket client speaking protocol v1, so the agent's own speed does not limit the
figure) or a real agent emitting from a worker thread. Reports events per second from the
first frame sent to the last event received by *every* subscriber, the bridge's CPU time
per event (meaningful on a busy machine), and checks that every subscriber got every
event once, in order, and that the database holds them all.

With ``--bridges 2`` (scaled only) a second bridge process holds a second edge that sends
as many events at the same time; the subscribers, on the first process, follow both edges,
so the two processes' batches reach them out of id order. Each must still get every event
once, in id order; the line then says how often the first process's streams read ids from
the database that live delivery had not brought in time (``hole reads``). With ``--follow
first`` they follow only the first edge (``?edge=``): the second edge's ids are holes they
never receive live.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import websockets

from bench.proxy import cpu_seconds, rss_mb
from edge_agent import protocol
from tests.support.live import AgentProcess, LiveBridge, ScaledBackends, start_all, wait_for

EDGE = "bench-events"
EDGE2 = "bench-events-2"
MANIFEST = [{"name": "echo", "version": "1", "routes": [{"method": "POST", "path": "emit/{count}"}]}]


async def subscriber(url: str, token: str, n: int, ready: asyncio.Event, done: list[float],
                     cut: list[int], edge: str | None = EDGE) -> list[tuple[str, int, int]]:
    """Read the stream until ``n`` notifications; return their ``(edge, i, id)`` in order.
    Like any client, reconnect with Last-Event-ID if the bridge cuts the stream (too far
    behind)."""
    seen: list[tuple[str, int, int]] = []
    last_id = None
    params = {"topic": "tick", **({"edge": edge} if edge else {})}
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=httpx.Timeout(30, read=120)) as client:
        while True:
            headers = {"Last-Event-ID": last_id} if last_id is not None else {}
            async with client.stream("GET", "/events", params=params, headers=headers) as response:
                assert response.status_code == 200, await response.aread()
                buf = ""
                async for text in response.aiter_text():
                    buf += text
                    if not ready.is_set() and "retry:" in buf:
                        ready.set()
                    while "\n\n" in buf:
                        block, buf = buf.split("\n\n", 1)
                        for line in block.split("\n"):
                            if line.startswith("data: "):
                                data = json.loads(line[6:])
                                seen.append((data["edge"], data["data"]["i"], data["id"]))
                            elif line.startswith("id: "):
                                last_id = line[4:]
                    if len(seen) >= n:
                        done.append(time.perf_counter())
                        return seen
            cut.append(len(seen))


async def simulated_agent(ws_url: str, edge_token: str, n: int, batch: int = 500) -> float:
    """Connect as an agent and send ``n`` event frames; returns when the first was sent."""
    async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {edge_token}"},
                                  compression=None, ping_interval=None, max_size=2**22) as ws:
        await ws.send(protocol.encode({"type": "hello", "protocol": 1, "agent_version": "bench",
                                       "host": {"hostname": "bench"}, "plugins": MANIFEST}))
        welcome = protocol.decode(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        await asyncio.sleep(0.5)  # subscribers see the edge's topology event first
        started = time.perf_counter()
        for start in range(0, n, batch):
            for i in range(start, min(n, start + batch)):
                await ws.send(protocol.encode({"type": "event", "plugin": "echo", "topic": "tick",
                                               "data": {"i": i, "state": "DONE"}, "owner": None, "seq": i + 1,
                                               "ts": time.time()}))
            await asyncio.sleep(0)
        # Stay connected until the subscribers are done (the caller cancels us).
        await asyncio.sleep(3600)
    return started


def hole_reads(bridge: LiveBridge) -> float:
    """The process's ``radical_edge_events_stream_hole_reads_total`` (loopback may read it)."""
    text = httpx.get(f"{bridge.url}/metrics", timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("radical_edge_events_stream_hole_reads_total"))


async def run_once(args: argparse.Namespace, bridge: LiveBridge, api: str, edge_token: str,
                   other: tuple[LiveBridge, str] | None = None) -> dict:
    pid = bridge.proc.pid
    ready_events = [asyncio.Event() for _ in range(args.subscribers)]
    done: list[float] = []
    cut: list[int] = []
    both = other is not None and args.follow == "both"
    total = args.events * (2 if both else 1)
    subs = [asyncio.create_task(subscriber(bridge.url, api, total, ready, done, cut, None if both else EDGE))
            for ready in ready_events]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready_events)), 60)
    # Subscribers hold no thread each: the process's thread count does not grow with them.
    threads = psutil.Process(pid).num_threads()
    cpu_before = cpu_seconds(pid)
    holes_before = await asyncio.to_thread(hole_reads, bridge)
    agent_task = None
    agent = None
    other_task = None
    if other is not None:
        other_task = asyncio.create_task(simulated_agent(other[0].url.replace("http", "ws") + "/register",
                                                         other[1], args.events))
    if args.source == "sim":
        started = time.perf_counter()
        agent_task = asyncio.create_task(simulated_agent(bridge.url.replace("http", "ws") + "/register",
                                                         edge_token, args.events))
    else:
        agent = AgentProcess(bridge.url, edge_token, bridge.var_dir, plugins="tests.plugins.echo:EchoPlugin")
        agent.start()
        await asyncio.to_thread(wait_for, lambda: bridge.edge_online(api, EDGE), 30)
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=bridge.url, headers={"Authorization": f"Bearer {api}"},
                                     timeout=300) as client:
            response = await client.post(f"/{EDGE}/echo/emit/{args.events}")
            assert response.status_code == 200, response.text
    results = await asyncio.wait_for(asyncio.gather(*subs), 600)
    finished = max(done)
    cpu = cpu_seconds(pid) - cpu_before
    holes = await asyncio.to_thread(hole_reads, bridge) - holes_before
    for task in (agent_task, other_task):
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if agent is not None:
        agent.stop()
    edges = [EDGE, EDGE2] if both else [EDGE]
    for seen in results:
        for edge in edges:
            assert [i for e, i, _ in seen if e == edge] == list(range(args.events)), \
                "a subscriber missed or repeated events"
        ids = [event_id for _, _, event_id in seen]
        assert ids == sorted(set(ids)), "a subscriber got events out of id order"
    stored = int(bridge.manage("shell", "-c", "from bridge_app.models import EventRecord as E; "
                                              "print(E.objects.filter(kind='notification').count())")
                 .stdout.strip().splitlines()[-1])
    written = args.events * (2 if other else 1)
    assert stored == written, f"{stored} events stored of {written}"
    seconds = finished - started
    return {"events": total, "subscribers": args.subscribers, "seconds": seconds, "hole_reads": holes,
            "events_per_s": total / seconds, "bridge_cpu_us_per_event": cpu * 1e6 / total,
            "bridge_rss_mb": rss_mb(pid), "reconnects": len(cut), "threads": threads}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--subscribers", type=int, default=1)
    p.add_argument("--source", choices=["sim", "agent"], default="sim")
    p.add_argument("--mode", choices=["embedded", "scaled"], default="embedded")
    p.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
    p.add_argument("--bridges", type=int, choices=[1, 2], default=1,
                   help="2: a second process (scaled only) with a second edge sending as many events")
    p.add_argument("--follow", choices=["both", "first"], default="both",
                   help="with --bridges 2: subscribers follow both edges, or only the first (?edge=)")
    args = p.parse_args(argv)
    if args.bridges == 2 and (args.mode != "scaled" or args.source != "sim"):
        p.error("--bridges 2 needs --mode scaled and --source sim")
    backends = None
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        env = {"RADICAL_LOG_LEVEL": "WARNING", "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0",
               "RADICAL_EVENTS_RATE_PER_EDGE": "0"}  # the pipeline, not the per-edge limit
        if args.mode == "scaled":
            backends = ScaledBackends()
            backends.create()
            env.update(backends.env())
        try:
            bridge = LiveBridge(Path(tmp), env=env, server=args.server)
            bridge.migrate()
            edges = [(EDGE, "bench"), (EDGE2, "bench")] if args.bridges == 2 else [(EDGE, "bench")]
            seeded = bridge.seed(users=["bench"], api_tokens=["bench"], edge_tokens=edges)
            second = LiveBridge(Path(tmp) / "second", env=env, server=args.server) if args.bridges == 2 else None
            start_all([bridge] + ([second] if second else []))
            try:
                row = asyncio.run(run_once(args, bridge, seeded["api"]["bench"], seeded["edge"][EDGE],
                                           (second, seeded["edge"][EDGE2]) if second else None))
            finally:
                bridge.stop()
                if second is not None:
                    second.stop()
        finally:
            if backends is not None:
                backends.drop()
    label = f"{args.mode}, {args.server}, source {args.source}" + (
        f", 2 processes, following {args.follow}" if args.bridges == 2 else "")
    print(f"{label}: {row['events']} events to {row['subscribers']} subscriber(s) in {row['seconds']:.2f} s = "
          f"{row['events_per_s']:,.0f} events/s; bridge CPU {row['bridge_cpu_us_per_event']:.0f} µs/event; "
          f"RSS {row['bridge_rss_mb']:.0f} MB, {row['threads']} threads; "
          f"streams cut for falling behind (and resumed): {row['reconnects']}; hole reads {row['hole_reads']:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
