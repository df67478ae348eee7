"""Soak: mixed load for a long time, watching the bridge's memory (run by hand).

    python -m bench.soak --minutes 30

One bridge (embedded default) and one real agent (sysinfo + the echo test plugin). For the
whole run, at once: cheap calls at 16 concurrent clients, 256 KiB uploads and downloads,
plugin sessions opened and closed, an SSE subscriber receiving the echo plugin's events,
and 100 simulated edges joining and leaving every half minute. Prints one row per minute
(calls, errors, p50/p99, bridge RSS); the RSS must level off, not climb.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.edges import make_tokens
from bench.proxy import rss_mb
from tests.support.live import AgentProcess, LiveBridge, wait_for
from tests.support.simedge import SimEdge

EDGE = "soak"


async def cheap_calls(c: httpx.AsyncClient, stats: dict, stop: asyncio.Event) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        r = await c.get(f"/{EDGE}/sysinfo/version")
        stats["lat"].append((time.perf_counter() - t0) * 1000)
        stats["calls"] += 1
        stats["errors"] += r.status_code != 200


async def bodies(c: httpx.AsyncClient, stats: dict, stop: asyncio.Event) -> None:
    payload = random.randbytes(256 * 1024)
    while not stop.is_set():
        up = await c.post(f"/{EDGE}/echo/digest", content=payload)
        down = await c.get(f"/{EDGE}/echo/bytes/{256 * 1024}")
        stats["calls"] += 2
        stats["errors"] += (up.status_code != 200) + (down.status_code != 200 or len(down.content) != 256 * 1024)


async def sessions(c: httpx.AsyncClient, stats: dict, stop: asyncio.Event) -> None:
    while not stop.is_set():
        sid = (await c.post(f"/{EDGE}/sysinfo/register_session")).json()["sid"]
        ok = (await c.get(f"/{EDGE}/sysinfo/metrics/{sid}")).status_code == 200
        ok &= (await c.post(f"/{EDGE}/sysinfo/unregister_session/{sid}")).status_code == 200
        stats["calls"] += 3
        stats["errors"] += not ok
        await asyncio.sleep(0.2)


async def events(c: httpx.AsyncClient, stats: dict, stop: asyncio.Event) -> None:
    async def emit() -> None:
        while not stop.is_set():
            await c.post(f"/{EDGE}/echo/emit/50")
            await asyncio.sleep(1)

    emitter = asyncio.create_task(emit())
    try:
        async with c.stream("GET", "/events", params={"edge": EDGE}, timeout=None) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: notification"):
                    stats["events"] += 1
                if stop.is_set():
                    break
    finally:
        emitter.cancel()


async def churn(url: str, tokens: list[str], stats: dict, stop: asyncio.Event) -> None:
    while not stop.is_set():
        edges = [SimEdge(url, t) for t in tokens]
        await asyncio.gather(*(e.connect() for e in edges))
        await asyncio.sleep(15)
        await asyncio.gather(*(e.close() for e in edges))
        stats["joins"] += len(edges)
        await asyncio.sleep(15)


async def run(minutes: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        env = {"RADICAL_LOG_LEVEL": "WARNING", "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0"}
        bridge = LiveBridge(Path(tmp), env=env)
        bridge.migrate()
        seeded = bridge.seed(superusers=["bench"], api_tokens=["bench"], edge_tokens=[(EDGE, "bench")])
        token = seeded["api"]["bench"]
        sims = make_tokens(bridge, 100, "churn")
        bridge.start()
        agent = AgentProcess(bridge.url, seeded["edge"][EDGE], Path(tmp),
                             plugins="sysinfo,tests.plugins.echo:EchoPlugin", extra_args=["-q"]).start()
        try:
            wait_for(lambda: bridge.edge_online(token, EDGE), 30, what="soak edge online")
            stats = {"calls": 0, "errors": 0, "lat": [], "events": 0, "joins": 0}
            stop = asyncio.Event()
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=bridge.url, headers={"Authorization": f"Bearer {token}"},
                                         timeout=60, limits=limits) as c:
                ws_url = bridge.url.replace("http", "ws") + "/register"
                tasks = [asyncio.create_task(cheap_calls(c, stats, stop)) for _ in range(16)]
                tasks += [asyncio.create_task(bodies(c, stats, stop)) for _ in range(2)]
                tasks += [asyncio.create_task(sessions(c, stats, stop)),
                          asyncio.create_task(events(c, stats, stop)),
                          asyncio.create_task(churn(ws_url, sims, stats, stop))]
                print("| minute | calls | errors | p50 ms | p99 ms | events | edge joins | bridge RSS MB |")
                print("|-------:|------:|-------:|-------:|-------:|-------:|-----------:|--------------:|")
                for minute in range(1, int(minutes) + 1):
                    await asyncio.sleep(60)
                    lat, stats["lat"] = sorted(stats["lat"]), []
                    p99 = lat[int(len(lat) * 0.99) - 1] if lat else float("nan")
                    print(f"| {minute:6d} | {stats['calls']:5d} | {stats['errors']:6d} | "
                          f"{statistics.median(lat) if lat else float('nan'):6.2f} | {p99:6.2f} | "
                          f"{stats['events']:6d} | {stats['joins']:10d} | {rss_mb(bridge.proc.pid):13.1f} |",
                          flush=True)
                    stats.update(calls=0, errors=0, events=0, joins=0)
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            agent.stop()
            bridge.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30)
    args = p.parse_args(argv)
    asyncio.run(run(args.minutes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
