"""What the nginx hop costs: proxied calls straight to a bridge process beside the same calls
through nginx with ``deploy/nginx/radical-edge.conf`` (TLS, upstream keep-alive).

    python -m bench.nginx [--concurrency 1,32] [--seconds 8]

Starts one bridge process on PostgreSQL and Redis (``POSTGRES_TEST_URL``,
``REDIS_TEST_URL``, as the tests), nginx in front of it with a throwaway CA (one upstream, so
that both rows reach the same process: with two, half the calls would also cross processes
through Redis, which docs/BENCHMARKS.md measures on its own), and one agent with sysinfo
connected through nginx; drives ``GET /{edge}/sysinfo/version`` with wrk (which keeps its
connections open, so TLS handshakes are not in the figures) and prints a table, with CPU
microseconds per call of nginx and of the bridge.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import trustme

from bench.proxy import EDGE, cpu_seconds
from bench.wrk import run_wrk
from radical_edge_site.nginx import Nginx
from tests.support.live import AgentProcess, LiveBridge, ScaledBackends, free_port, wait_for


def _tls(directory: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(files["cert"]), append=i > 0)
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--seconds", type=float, default=8.0)
    args = p.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    backends = ScaledBackends()
    backends.create()
    env = {**backends.env(), "RADICAL_LOG_LEVEL": "WARNING", "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0"}
    started: list = []
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        var = Path(tmp)
        try:
            bridge = LiveBridge(var / "bridge", env=env)
            bridge.migrate()
            bridge.create_user("bench", superuser=True)
            token = bridge.api_token("bench")
            edge_token = bridge.edge_token(EDGE, owner="bench")
            started.append(bridge.start())
            tls = _tls(var)
            nginx = Nginx(var / "nginx", https_port=free_port(), http_port=free_port(), upstreams=[bridge.port],
                          cert=tls["cert"], key=tls["key"]).start()
            started.append(nginx)
            started.append(AgentProcess(nginx.url, edge_token, var, plugins="sysinfo",
                                        extra_args=["-q", "--ca-cert", str(tls["ca"])]).start())
            wait_for(lambda: bridge.edge_online(token, EDGE), 30, what="bench edge online")
            headers = {"Authorization": f"Bearer {token}"}
            print("| path | clients | calls/s | p50 ms | p99 ms | errors | CPU µs/call: nginx | bridge |")
            print("|---|---|---|---|---|---|---|---|")
            for c in concurrencies:
                for name, base in [("direct, http", bridge.url), ("through nginx, https", nginx.url)]:
                    url = f"{base}/{EDGE}/sysinfo/version"
                    run_wrk(url, concurrency=8, seconds=2, headers=headers)  # warm-up
                    before = cpu_seconds(nginx.proc.pid), cpu_seconds(bridge.proc.pid)
                    r = run_wrk(url, concurrency=c, seconds=args.seconds, headers=headers)
                    n = max(r.requests, 1)
                    cpu_nginx = (cpu_seconds(nginx.proc.pid) - before[0]) * 1e6 / n
                    cpu_bridge = (cpu_seconds(bridge.proc.pid) - before[1]) * 1e6 / n
                    print(f"| {name} | {c} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} "
                          f"| {cpu_nginx:.0f} | {cpu_bridge:.0f} |", flush=True)
        finally:
            for proc in reversed(started):
                proc.stop()
            backends.drop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
