"""Proxy latency and throughput through a real bridge and agent, beside a bare ASGI app.

    python -m bench.proxy                                  # embedded default, all concurrencies
    python -m bench.proxy --modes embedded,scaled --seconds 10
    python -m bench.proxy --server daphne --modes embedded
    python -m bench.proxy --orbit                          # also the original RADICAL Edge
    python -m bench.proxy --orbit --orbit-variants http,https,uvloop
    python -m bench.proxy --no-bare --bridge-env RADICAL_AUDIT_STRICT=1   # strict audit's cost

    python -m bench.proxy --baseline /tmp/base --rounds 3   # another checkout side by side

Starts everything itself on 127.0.0.1 (bridge, one agent with sysinfo, and under the same
uvicorn settings a raw ASGI app, "the limit", and a bare FastAPI app), drives
``GET /{edge}/sysinfo/version`` with wrk at each concurrency, each target in turn, and
prints a table. "scaled" runs two uvicorn workers on
Redis (pub/sub layer) and PostgreSQL. Figures are machine-dependent: compare rows of one
run, not runs on different machines.

``--orbit`` adds the original RADICAL Edge (``radical-orbit`` on PyPI, in a venv of its own
cached under ~/.cache/radical-edge-bench; see bench/orbit.py): its broker and one endpoint
with its sysinfo plugin, driven on the same route with the same wrk settings. If it cannot
run here, the reason is printed and the other rows stand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench import orbit
from bench.wrk import run_wrk
from tests.support.live import ROOT, AgentProcess, LiveBridge, ScaledBackends, free_port, wait_for

EDGE = "bench"


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def start_bare(port: int, app: str = "bench.bare_app:app") -> subprocess.Popen:
    """An app of bench/bare_app.py under the bridge's uvicorn settings (uvloop, httptools)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/x/sysinfo/version", timeout=1).status_code == 200, 20,
             what="bare app")
    return proc


def cpu_seconds(pid: int) -> float:
    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


@dataclass
class Target:
    label: str
    url: str
    headers: dict[str, str]
    pids: dict[str, int]  # name -> pid, for CPU per request ("server", "agent")


def measure(targets: list[Target], concurrencies: list[int], seconds: float, rounds: int = 1) -> list[dict]:
    """wrk at each concurrency against each target in turn (so that a machine busy with
    other work slows them alike); also CPU microseconds per request of each process, a
    figure that stays meaningful on a busy machine. With ``rounds`` > 1 the whole sequence
    repeats and each row is the median of its rounds."""
    for t in targets:
        run_wrk(t.url, concurrency=16, seconds=2, headers=t.headers)  # warm-up
    samples: dict[tuple[str, int], list[dict]] = {}
    for _ in range(rounds):
        for c in concurrencies:
            for t in targets:
                before = {name: cpu_seconds(pid) for name, pid in t.pids.items()}
                result = run_wrk(t.url, concurrency=c, seconds=seconds, headers=t.headers)
                cpu = {f"cpu_us_{name}": (cpu_seconds(pid) - before[name]) * 1e6 / max(result.requests, 1)
                       for name, pid in t.pids.items()}
                samples.setdefault((t.label, c), []).append({**vars(result), **cpu})
    rows = []
    for t in targets:
        for c in concurrencies:
            runs = samples[(t.label, c)]
            row = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            row["concurrency"] = c
            row["requests"] = int(row["requests"])
            row["errors"] = sum(r["errors"] for r in runs)
            rows.append({"target": t.label, **row, "rss_mb": rss_mb(t.pids["server"])})
    return rows


def start_system(mode: str, server: str, var: Path, backends: ScaledBackends | None,
                 extra_env: dict[str, str] | None = None, root: Path = ROOT) -> tuple[LiveBridge, AgentProcess, str]:
    # Rate limits off: this measures the proxy, not the limiter's refusals.
    env = {"RADICAL_LOG_LEVEL": "WARNING", "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0", **(extra_env or {})}
    workers = 1
    if mode == "scaled":
        assert backends is not None
        env.update(backends.env())
        workers = 2
    bridge = LiveBridge(var, env=env, server=server, workers=workers, root=root)
    bridge.migrate()
    bridge.create_user("bench", superuser=True)
    token = bridge.api_token("bench")
    edge_token = bridge.edge_token(EDGE, owner="bench")
    bridge.start(wait=False)
    try:
        bridge.wait_ready(timeout=120)  # two workers on a busy machine take a while
        agent = AgentProcess(bridge.url, edge_token, var, plugins="sysinfo", extra_args=["-q"], root=root).start()
    except BaseException:
        bridge.stop()
        raise
    try:
        wait_for(lambda: bridge.edge_online(token, EDGE), 30, what="bench edge online")
    except BaseException:
        agent.stop()
        bridge.stop()
        raise
    return bridge, agent, token


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="embedded", help="comma list of embedded, scaled")
    p.add_argument("--server", default="uvicorn", choices=["uvicorn", "daphne"])
    p.add_argument("--concurrency", default="1,16,64,256")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--no-bare", action="store_true", help="skip the raw ASGI and bare FastAPI apps")
    p.add_argument("--baseline", metavar="DIR",
                   help="also run the bridge and agent of another checkout (e.g. `git archive main | tar -x -C DIR`), "
                        "side by side with this one")
    p.add_argument("--rounds", type=int, default=1, help="repeat the whole sequence; rows are medians")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--bridge-env", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for the bridge (repeatable), e.g. RADICAL_AUDIT_STRICT=1; named in the rows")
    p.add_argument("--orbit", action="store_true",
                   help="also measure the original RADICAL Edge (radical-orbit, installed on first use into "
                        f"{orbit.CACHE})")
    p.add_argument("--orbit-variants", default="http,https",
                   help=f"comma list of {', '.join(orbit.VARIANTS)}: http = its broker served plain like ours, "
                        "https = as shipped (it requires TLS), uvloop = http with uvloop+httptools added")
    args = p.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    orbit_variants = [v.strip() for v in args.orbit_variants.split(",") if v.strip()]
    if unknown := set(orbit_variants) - set(orbit.VARIANTS):
        p.error(f"unknown --orbit-variants {', '.join(sorted(unknown))} (choose from {', '.join(orbit.VARIANTS)})")
    try:
        extra_env = dict(setting.split("=", 1) for setting in args.bridge_env)
    except ValueError:
        p.error("--bridge-env takes NAME=VALUE")
    rows: list[dict] = []
    notes: list[str] = []
    codes = [("", ROOT)]
    if args.baseline:
        codes.insert(0, (" baseline", Path(args.baseline).resolve()))

    def label(mode: str, name: str) -> str:
        text = f"bridge {mode}{name} ({args.server}{', 2 workers' if mode == 'scaled' else ''})"
        return text + "".join(f", {setting}" for setting in args.bridge_env)

    with contextlib.ExitStack() as stack:
        # The limits and the embedded bridges (this code and the baseline) run side by side,
        # measured in turn at each concurrency. Scaled bridges share one Redis database, so
        # they run one after the other.
        targets: list[Target] = []
        if not args.no_bare:
            for name, app in (("raw ASGI app (limit)", "bench.bare_app:raw"), ("bare FastAPI", "bench.bare_app:app")):
                port = free_port()
                proc = start_bare(port, app)
                stack.callback(proc.wait)
                stack.callback(proc.terminate)
                targets.append(Target(name, f"http://127.0.0.1:{port}/{EDGE}/sysinfo/version", {},
                                      {"server": proc.pid}))
        modes = args.modes.split(",")
        if "embedded" in modes:
            for name, root in codes:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-proxy-"))
                bridge, agent, token = start_system("embedded", args.server, Path(tmp), None, extra_env, root)
                stack.callback(bridge.stop)
                stack.callback(agent.stop)
                targets.append(Target(label("embedded", name), f"{bridge.url}/{EDGE}/sysinfo/version",
                                      {"Authorization": f"Bearer {token}"},
                                      {"server": bridge.proc.pid, "agent": agent.proc.pid}))
        if targets:
            rows += measure(targets, concurrencies, args.seconds, args.rounds)
    if "scaled" in modes:
        for name, root in codes:
            backends = ScaledBackends()
            backends.create()
            try:
                with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
                    bridge, agent, token = start_system("scaled", args.server, Path(tmp), backends, extra_env, root)
                    try:
                        rows += measure([Target(label("scaled", name), f"{bridge.url}/{EDGE}/sysinfo/version",
                                                {"Authorization": f"Bearer {token}"},
                                                {"server": bridge.proc.pid, "agent": agent.proc.pid})],
                                        concurrencies, args.seconds, args.rounds)
                    finally:
                        agent.stop()
                        bridge.stop()
            except (RuntimeError, TimeoutError) as exc:  # the other rows stand
                notes.append(f"bridge scaled{name} not measured: {exc}")
                print(notes[-1], file=sys.stderr)
            finally:
                backends.drop()

    if args.orbit:
        for variant in orbit_variants:
            with tempfile.TemporaryDirectory(prefix="bench-orbit-") as tmp:
                system = orbit.OrbitSystem(variant, Path(tmp), edge=EDGE)
                try:
                    system.start()
                    url = system.version_url()
                    print(f"[orbit] {variant}: GET {url} -> {system.probe}")
                    rows += measure([Target(system.label(), url, system.headers,
                                            {"server": system.broker.pid, "agent": system.endpoint.pid})],
                                    concurrencies, args.seconds, args.rounds)
                except orbit.OrbitUnavailable as exc:
                    notes.append(f"original RADICAL Edge ({variant}) not measured: {exc}")
                    print(f"[orbit] {notes[-1]}", file=sys.stderr)
                except subprocess.CalledProcessError as exc:  # wrk itself failed (e.g. built without TLS)
                    notes.append(f"original RADICAL Edge ({variant}) not measured: {' '.join(exc.cmd[:1])} exited "
                                 f"with {exc.returncode}: {(exc.stderr or exc.stdout or '').strip()[-500:]}")
                    print(f"[orbit] {notes[-1]}", file=sys.stderr)
                finally:
                    system.stop()

    limit = {r["concurrency"]: r["rps"] for r in rows if r["target"].startswith("raw")}
    print(f"\nProxy benchmark: GET /{{edge}}/sysinfo/version, wrk, {args.seconds:g}s per row, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}\n")
    width = max([40, *(len(r["target"]) for r in rows)])
    print(f"| {'target':{width}s} | conc | req/s   | p50 ms | p90 ms | p99 ms | errors | vs raw  | "
          "server CPU µs/req | agent CPU µs/req | RSS MB |")
    print(f"|{'-' * (width + 2)}|------|---------|--------|--------|--------|--------|---------|"
          "------------------|------------------|--------|")
    for r in rows:
        ratio = r["rps"] / limit[r["concurrency"]] if r["concurrency"] in limit else float("nan")
        agent_cpu = f"{r['cpu_us_agent']:16.0f}" if "cpu_us_agent" in r else f"{'-':>16s}"
        print(f"| {r['target']:{width}s} | {r['concurrency']:4d} | {r['rps']:7.0f} | {r['p50_ms']:6.2f} | "
              f"{r['p90_ms']:6.2f} | {r['p99_ms']:6.2f} | {r['errors']:6d} | {ratio:7.2f} | "
              f"{r['cpu_us_server']:16.0f} | {agent_cpu} | {r['rss_mb']:6.0f} |")
    for note in notes:
        print(f"\n{note}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
