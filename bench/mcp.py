"""MCP tool calls beside the same plugin call over REST, through one real bridge and agent.

    python -m bench.mcp                       # 5 s per row, 8 concurrent callers
    python -m bench.mcp --seconds 10 --concurrency 1,8

Starts an embedded bridge and an agent with the test echo plugin on 127.0.0.1, then, for
each concurrency, drives the cheapest read of a plugin (``GET /{edge}/echo/ping``) two
ways for the same number of seconds: over REST with httpx, and as the MCP tool
``read_route`` (edge, echo, ping) with the official MCP client SDK over Streamable HTTP
(2026-07-28, stateless: one HTTP request per tool call). Prints calls/s and p50/p99
latency for each, the bridge's CPU time per call (the client SDKs share these cores, so
this is the fairer comparison of the two paths), and the MCP/REST throughput ratio. Every call is checked; a failed
call stops the run. Figures are machine-dependent: compare the rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import httpx2
import psutil
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.live import AgentProcess, LiveBridge, wait_for

EDGE = "bench-mcp"


async def drive(call, seconds: float, concurrency: int) -> list[float]:
    """Run ``call()`` from ``concurrency`` loops for ``seconds``; the latencies."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def rest_row(url: str, token: str, seconds: float, concurrency: int) -> list[float]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        async def call() -> None:
            r = await http.get(f"/{EDGE}/echo/ping")
            if r.status_code != 200 or r.json() != {"pong": True}:
                raise RuntimeError(f"REST call failed: {r.status_code} {r.text[:200]}")

        await call()
        return await drive(call, seconds, concurrency)


async def mcp_row(url: str, token: str, seconds: float, concurrency: int) -> list[float]:
    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
                Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client):
        async def call() -> None:
            result = await client.call_tool("read_route", {"edge": EDGE, "plugin": "echo", "route": "ping"})
            if result.is_error or result.structured_content != {"answer": {"pong": True}}:
                raise RuntimeError(f"MCP call failed: {result.content}")

        await call()
        return await drive(call, seconds, concurrency)


def summary(latencies: list[float], seconds: float) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return len(latencies) / seconds, statistics.median(ordered) * 1000, p99 * 1000


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds of the bridge and its worker processes."""
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="8", help="comma-separated, e.g. 1,8")
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="bench-mcp-"))
    # Rate limits off: they would measure the limit, not the paths.
    bridge = LiveBridge(var, env={"RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0"})
    agent = None
    try:
        bridge.migrate()
        bridge.start()
        seeded = bridge.seed(users=["bench"], api_tokens=["bench"], edge_tokens=[(EDGE, "bench")])
        token = seeded["api"]["bench"]
        agent = AgentProcess(bridge.url, seeded["edge"][EDGE], var, plugins="tests.plugins.echo:EchoPlugin").start()
        wait_for(lambda: bridge.edge_online(token, EDGE), 30, what="edge online")
        server = psutil.Process(bridge.proc.pid)
        print(f"{'path':6s} {'conc':>4s} {'calls/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'bridge CPU/call':>16s}")
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            rates = {}
            for name, row in (("REST", rest_row), ("MCP", mcp_row)):
                before = _cpu(server)
                latencies = asyncio.run(row(bridge.url, token, args.seconds, concurrency))
                cpu = (_cpu(server) - before) / max(1, len(latencies)) * 1e6
                rate, p50, p99 = summary(latencies, args.seconds)
                rates[name] = rate
                print(f"{name:6s} {concurrency:4d} {rate:9.0f} {p50:8.2f} {p99:8.2f} {cpu:13.0f} µs", flush=True)
            print(f"MCP/REST throughput at {concurrency}: {rates['MCP'] / rates['REST']:.2f}")
    finally:
        if agent is not None:
            agent.stop()
        bridge.stop()


if __name__ == "__main__":
    main()
