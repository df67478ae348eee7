"""Audit lag: how long after its answer a proxied call's record is visible in the database,
and what strict mode (a call answered only once its record is committed) costs.

    python -m bench.audit_lag                       # default and strict, 10 s each
    python -m bench.audit_lag --rate 500 --seconds 20

For each mode: an embedded bridge (SQLite) and one agent; ``--clients`` concurrent clients
send ``GET /{edge}/sysinfo/version`` at ``--rate`` calls per second in all, each with its
own X-Request-ID, and note when each answer arrived; a reader polls the database every
20 ms (a read-only SQLite connection, as an administrator's query would be) and notes when
each record first appears. Prints lag percentiles (record visible minus answer received;
negative in strict mode: the record is there before the caller has its answer) and the
client-side latency of the calls, per mode.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.proxy import EDGE, start_system


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def poll_records(db: Path, seen: dict[str, float], stop: threading.Event) -> None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    last_id = 0
    while not stop.is_set():
        try:
            rows = conn.execute("SELECT id, request_id FROM bridge_app_callrecord WHERE id > ? ORDER BY id",
                                (last_id,)).fetchall()
        except sqlite3.OperationalError:
            rows = []  # locked for a moment by the writer
        now = time.perf_counter()
        for row_id, request_id in rows:
            last_id = max(last_id, row_id)
            seen.setdefault(request_id, now)
        stop.wait(0.02)
    conn.close()


async def drive(url: str, token: str, rate: float, seconds: float,
                clients: int) -> tuple[dict[str, float], list[float]]:
    answered: dict[str, float] = {}
    latencies: list[float] = []
    interval = clients / rate
    deadline = time.perf_counter() + seconds

    async def client(n: int, c: httpx.AsyncClient) -> None:
        i = 0
        while time.perf_counter() < deadline:
            rid = f"lag-{n}-{i}"
            t0 = time.perf_counter()
            r = await c.get(f"/{EDGE}/sysinfo/version", headers={"X-Request-ID": rid})
            t1 = time.perf_counter()
            if r.status_code == 200:
                answered[rid] = t1
                latencies.append((t1 - t0) * 1000)
            i += 1
            await asyncio.sleep(max(0.0, interval - (t1 - t0)))

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        await asyncio.gather(*(client(n, c) for n in range(clients)))
    return answered, latencies


def run_mode(label: str, env: dict[str, str], args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        bridge, agent, token = start_system("embedded", "uvicorn", Path(tmp), None, env)
        seen: dict[str, float] = {}
        stop = threading.Event()
        reader = threading.Thread(target=poll_records, args=(Path(tmp) / "db.sqlite3", seen, stop), daemon=True)
        try:
            reader.start()
            answered, latencies = asyncio.run(drive(bridge.url, token, args.rate, args.seconds, args.clients))
            time.sleep(args.settle)
        finally:
            stop.set()
            reader.join(5)
            agent.stop()
            bridge.stop()
    lags = [(seen[rid] - t) * 1000 for rid, t in answered.items() if rid in seen]
    return {"mode": label, "calls": len(answered), "visible": len(lags),
            "lag_p50": percentile(lags, 0.5), "lag_p99": percentile(lags, 0.99),
            "lag_max": max(lags, default=float("nan")),
            "call_p50": percentile(latencies, 0.5), "call_p99": percentile(latencies, 0.99),
            "rps": len(answered) / args.seconds,
            "call_mean": statistics.fmean(latencies) if latencies else float("nan")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=200.0, help="calls per second in all")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=3.0, help="seconds to keep reading after the last call")
    p.add_argument("--modes", default="default,strict")
    args = p.parse_args(argv)
    modes = {"default": ("default (flush every 0.5 s)", {}),
             "old": ("30 s housekeeping only (as before)", {"RADICAL_AUDIT_FLUSH_INTERVAL": "30"}),
             "strict": ("strict (answer after commit)", {"RADICAL_AUDIT_STRICT": "1"})}
    rows = [run_mode(*modes[m.strip()], args) for m in args.modes.split(",")]
    print(f"\nAudit lag: {args.rate:g} calls/s from {args.clients} clients for {args.seconds:g} s, "
          f"embedded (SQLite), {time.strftime('%Y-%m-%d')}\n")
    print("| mode | calls | visible | lag p50 ms | lag p99 ms | lag max ms | call p50 ms | call p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['calls']} | {r['visible']} | {r['lag_p50']:.0f} | {r['lag_p99']:.0f} | "
              f"{r['lag_max']:.0f} | {r['call_p50']:.2f} | {r['call_p99']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
