"""Many connected edges: registration time, bridge memory per edge, proxy latency while
they are all connected, and memory across join/leave cycles.

    python -m bench.edges --edges 1000 --cycles 3

Simulated edges are real WebSocket clients speaking protocol v1 (hello, welcome, answer
requests), all in one process so that a thousand of them fit on a laptop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.proxy import cpu_seconds
from tests.support.live import LiveBridge, wait_for
from tests.support.simedge import SimEdge


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def make_tokens(bridge: LiveBridge, n: int, prefix: str) -> list[str]:
    code = (
        "import json; from bridge_app.domain import services; from django.contrib.auth.models import User; "
        "u=User.objects.get(username='bench'); "
        f"print(json.dumps([services.edge_token_create(name=f'{prefix}{{i}}', owner=u)[1] for i in range({n})]))"
    )
    return json.loads(bridge.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


async def connect_all(edges: list[SimEdge], concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(e: SimEdge) -> None:
        async with sem:
            await e.connect()

    started = time.perf_counter()
    await asyncio.gather(*(one(e) for e in edges))
    return time.perf_counter() - started


async def heartbeats(edges: list[SimEdge], every: float = 10.0) -> None:
    """Ping from every connected edge, as agents do: registering thousands of edges on a
    slow machine can take longer than the three silent intervals after which an edge
    counts as gone."""
    while True:
        await asyncio.sleep(every)
        for e in edges:
            if e.ws is not None:
                await e.ping()


async def latency_sample(bridge: LiveBridge, token: str, names: list[str], n: int,
                         first: list[float] | None = None) -> list[float]:
    """``n`` sequential calls to random edges, ms each; the calls to an edge not called
    before in this sample also go to ``first``."""
    out = []
    called: set[str] = set()
    async with httpx.AsyncClient(base_url=bridge.url, headers={"Authorization": f"Bearer {token}"}) as c:
        for _ in range(n):
            name = random.choice(names)
            t0 = time.perf_counter()
            r = await c.get(f"/{name}/sysinfo/version")
            out.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200, r.text
            if first is not None and name not in called:
                first.append(out[-1])
            called.add(name)
    return out


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-edges-") as tmp:
        bridge = LiveBridge(Path(tmp), env={"RADICAL_LOG_LEVEL": "WARNING", "RADICAL_USER_RATE": "0",
                                            "RADICAL_EDGE_RATE": "0"}, server=args.server)
        bridge.migrate()
        bridge.create_user("bench", superuser=True)
        api = bridge.api_token("bench")
        tokens = make_tokens(bridge, args.edges, "sim")
        bridge.start()
        try:
            pid = bridge.proc.pid
            ws_url = bridge.url.replace("http", "ws") + "/register"
            names = [f"sim{i}" for i in range(args.edges)]
            # Warm up: one edge and some requests, so the baseline includes imports and caches.
            warm = SimEdge(ws_url, tokens[0])
            await warm.connect()
            warm_p50 = statistics.median(await latency_sample(bridge, api, names[:1], 200))
            await warm.close()
            await asyncio.sleep(0.5)
            base = rss(pid)
            rows = []
            for cycle in range(args.cycles):
                before = rss(pid)
                edges = [SimEdge(ws_url, t) for t in tokens]
                cpu_before = cpu_seconds(pid)
                pinger = asyncio.create_task(heartbeats(edges))
                seconds = await connect_all(edges, args.concurrency)
                register_cpu = cpu_seconds(pid) - cpu_before
                await asyncio.sleep(1.0)
                connected_rss = rss(pid)
                first: list[float] = []
                lat = await latency_sample(bridge, api, names, args.requests, first)
                pinger.cancel()
                await asyncio.gather(*(e.close() for e in edges))
                wait_for(lambda: not any(e["connected"] for e in httpx.get(
                    f"{bridge.url}/edges", headers={"Authorization": f"Bearer {api}"}, timeout=30).json()["edges"]),
                    60, what="all edges offline")
                await asyncio.sleep(1.0)
                rows.append({
                    "cycle": cycle + 1, "edges": args.edges, "register_s": seconds, "register_cpu_s": register_cpu,
                    "kb_per_edge": (connected_rss - before) / args.edges / 1024,
                    "rss_connected_mb": connected_rss / 2**20, "rss_after_leave_mb": rss(pid) / 2**20,
                    "p50_ms": statistics.median(lat), "p99_ms": sorted(lat)[int(len(lat) * 0.99) - 1],
                    "first_p50_ms": statistics.median(first), "warm_p50_ms": warm_p50,
                })
        finally:
            bridge.stop()
    print(f"\nEdges benchmark ({args.server}, embedded default): {args.edges} simulated edges, "
          f"{args.concurrency} concurrent handshakes, {args.requests} sequential requests to random edges\n")
    print("KB/edge: RSS growth while the edges connect, divided by their number. RSS after leave: the process\n"
          "after all edges left; it must level off over cycles (no growth from join/leave).\n")
    print("first p50: calls to an edge not called before in the cycle; one edge p50: 200 calls to one edge\n"
          "before the cycles, for comparison.\n")
    print("| cycle | edges | register s | edges/s | bridge CPU s | KB/edge | RSS connected MB | RSS after leave MB | "
          "p50 ms | p99 ms | first p50 ms | one edge p50 ms |")
    print("|-------|-------|------------|---------|--------------|---------|------------------|--------------------|"
          "--------|--------|--------------|-----------------|")
    for r in rows:
        print(f"| {r['cycle']:5d} | {r['edges']:5d} | {r['register_s']:10.2f} | {r['edges'] / r['register_s']:7.0f} | "
              f"{r['register_cpu_s']:12.2f} | {r['kb_per_edge']:7.1f} | "
              f"{r['rss_connected_mb']:16.1f} | {r['rss_after_leave_mb']:18.1f} | {r['p50_ms']:6.2f} | "
              f"{r['p99_ms']:6.2f} | {r['first_p50_ms']:12.2f} | {r['warm_p50_ms']:15.2f} |")
    print(f"\nbaseline RSS (no edges): {base / 2**20:.1f} MB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edges", type=int, default=1000)
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=200, help="handshakes in flight at once")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--server", default="uvicorn", choices=["uvicorn", "daphne"])
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.run(run(args))
    except ImportError:
        asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
