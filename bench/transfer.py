"""Transfer rate of large bodies through the bridge (upload and download), and the
bridge's peak memory while they move.

    python -m bench.transfer                       # embedded default
    python -m bench.transfer --modes embedded,scaled

Uses the test plugin's ``POST digest`` (the agent hashes what it received) and
``GET bytes/{n}`` (the agent produces n bytes and their hash), so every transfer is
checked byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import httpx

from bench.proxy import cpu_seconds, rss_mb
from tests.support.live import AgentProcess, LiveBridge, ScaledBackends, wait_for
from tests.test_transfer_e2e import PeakRSS

EDGE = "bench"
SIZES_MIB = (1, 8, 64)


def run_mode(mode: str, repeats: int, backends: ScaledBackends | None, extra_env: dict[str, str]) -> list[dict]:
    env = {"RADICAL_LOG_LEVEL": "WARNING", "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0", **extra_env}
    if mode == "scaled":
        env.update(backends.env())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        bridge = LiveBridge(Path(tmp), env=env)
        bridge.migrate()
        seeded = bridge.seed(superusers=["bench"], api_tokens=["bench"], edge_tokens=[(EDGE, "bench")])
        token = seeded["api"]["bench"]
        bridge.start()
        agent = AgentProcess(bridge.url, seeded["edge"][EDGE], Path(tmp), plugins="tests.plugins.echo:EchoPlugin",
                             extra_args=["-q"]).start()
        try:
            wait_for(lambda: bridge.edge_online(token, EDGE), 30, what="edge online")
            with httpx.Client(base_url=bridge.url, headers={"Authorization": f"Bearer {token}"}, timeout=300) as c:
                c.get(f"/{EDGE}/echo/ping")
                for mib in SIZES_MIB:
                    size = mib * 2**20
                    body = os.urandom(size)
                    expected = hashlib.sha256(body).hexdigest()
                    cpu_before = cpu_seconds(bridge.proc.pid)
                    with PeakRSS(bridge.proc.pid) as peak:
                        started = time.perf_counter()
                        for _ in range(repeats):
                            r = c.post(f"/{EDGE}/echo/digest", content=body)
                            assert r.json()["sha256"] == expected, "upload corrupted"
                        up = time.perf_counter() - started
                        started = time.perf_counter()
                        for _ in range(repeats):
                            r = c.get(f"/{EDGE}/echo/bytes/{size}")
                            assert hashlib.sha256(r.content).hexdigest() == r.headers["x-edge-sha256"], "corrupted"
                        down = time.perf_counter() - started
                    cpu_ms_per_mib = (cpu_seconds(bridge.proc.pid) - cpu_before) * 1e3 / (2 * mib * repeats)
                    rows.append({"mode": mode, "mib": mib, "repeats": repeats,
                                 "up_mb_s": size * repeats / up / 1e6, "down_mb_s": size * repeats / down / 1e6,
                                 "peak_growth_mib": peak.growth_mib, "rss_mb": rss_mb(bridge.proc.pid),
                                 "cpu_ms_per_mib": cpu_ms_per_mib})
        finally:
            agent.stop()
            bridge.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="embedded")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-kib", type=int, help="bridge CHUNK_SIZE (RADICAL_CHUNK_SIZE) in KiB")
    p.add_argument("--window", type=int, help="bridge STREAM_WINDOW (RADICAL_STREAM_WINDOW) in chunks")
    args = p.parse_args(argv)
    backends = None
    rows = []
    for mode in args.modes.split(","):
        if mode == "scaled" and backends is None:
            backends = ScaledBackends()
            backends.create()
        extra = {}
        if args.chunk_kib:
            extra["RADICAL_CHUNK_SIZE"] = str(args.chunk_kib * 1024)
        if args.window:
            extra["RADICAL_STREAM_WINDOW"] = str(args.window)
        rows += run_mode(mode, args.repeats, backends, extra)
    if backends is not None:
        backends.drop()
    print(f"\nTransfer benchmark: bodies through bridge and agent, {args.repeats} of each, checked by SHA-256\n")
    print("| mode     | size MiB | upload MB/s | download MB/s | bridge CPU ms/MiB | bridge peak growth MiB | "
          "bridge RSS MB |")
    print("|----------|----------|-------------|---------------|-------------------|------------------------|"
          "---------------|")
    for r in rows:
        print(f"| {r['mode']:8s} | {r['mib']:8d} | {r['up_mb_s']:11.0f} | {r['down_mb_s']:13.0f} | "
              f"{r['cpu_ms_per_mib']:17.1f} | {r['peak_growth_mib']:22.1f} | {r['rss_mb']:13.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
