"""Calls to child edges (edges on compute nodes) beside calls to their parent, in one run.

    python -m bench.children                       # children as local psij jobs
    python -m bench.children --executor slurm      # children in real Slurm jobs
    python -m bench.children --rounds 5 --seconds 5 --concurrency 1,16,64

Starts a bridge, a parent edge (sysinfo, psij, edges) and two children through the parent's
``edges`` plugin: one that dials the bridge directly and one forced through the parent's
relay. Drives the cheap route ``GET /{edge}/sysinfo/version`` of each with wrk, target after
target within each round (so that load from the machine's other work falls on all three
alike), and prints the median over rounds of each figure: p50 latency at concurrency 1 and
requests per second at the others, with the relay's cost beside them. The acceptance line
of issue 16: the relay adds at most 0.2 ms to the median of a cheap call and keeps at least
70% of the parent's throughput.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import psutil

from bench.wrk import run_wrk
from edge_agent.client import BridgeClient
from tests.support.live import AgentProcess, LiveBridge, wait_for

PARENT = "bench-login"


def start(var: Path, executor: str, queue: str) -> tuple[LiveBridge, AgentProcess, str, dict[str, str]]:
    env = {"RADICAL_LOG_LEVEL": "WARNING", "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0"}
    bridge = LiveBridge(var, env=env)
    bridge.migrate()
    seeded = bridge.seed(users=["bench"], api_tokens=["bench"], edge_tokens=[(PARENT, "bench")])
    token = seeded["api"]["bench"]
    bridge.start()
    parent = AgentProcess(bridge.url, seeded["edge"][PARENT], var, plugins="sysinfo,psij,edges",
                          options=["psij.poll_interval=1"], extra_args=["-q"]).start()
    wait_for(lambda: bridge.edge_online(token, PARENT), 30, what="parent online")
    ec = BridgeClient(bridge.url, token=token).get_edge_client(PARENT)
    names = {"parent": PARENT}
    for label, connectivity in (("child direct", "direct"), ("child relay", "relay")):
        child = ec.launch_edge(executor=executor, queue=queue, duration=1200, plugins=["sysinfo"],
                               connectivity=connectivity, name=connectivity)
        child.wait_online(timeout=300, interval=0.5)
        names[label] = child.name
    return bridge, parent, token, names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--executor", default="local", help="psij executor for the children (local, slurm)")
    p.add_argument("--queue", default="", help="queue (partition) for the children's jobs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", default="1,16,64")
    args = p.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-children-") as tmp:
        bridge, parent, token, names = start(Path(tmp), args.executor, args.queue)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            figures: dict[tuple[str, int], list] = {}
            for name in names.values():  # warm-up
                run_wrk(f"{bridge.url}/{name}/sysinfo/version", concurrency=8, seconds=1, headers=headers)
            for _ in range(args.rounds):
                for c in concurrencies:
                    for label, name in names.items():
                        before = _cpu(parent.proc.pid)
                        result = run_wrk(f"{bridge.url}/{name}/sysinfo/version", concurrency=c,
                                         seconds=args.seconds, headers=headers)
                        assert result.errors == 0, f"{label}: {result.errors} errors"
                        result.parent_cpu_us = (_cpu(parent.proc.pid) - before) * 1e6 / max(result.requests, 1)
                        figures.setdefault((label, c), []).append(result)
            report(names, concurrencies, figures, args)
        finally:
            BridgeClient(bridge.url, token=token).get_edge_client(names["child relay"]).request(
                "GET", "sysinfo", "version")
            for label in ("child direct", "child relay"):
                BridgeClient(bridge.url, token=token).request("POST", f"/api/v1/edges/{names[label]}/stop")
            parent.stop()
            bridge.stop()
    return 0


def _cpu(pid: int) -> float:
    """CPU seconds of the parent's agent process alone (not its children: the local
    executor's jobs are its child processes)."""
    return sum(psutil.Process(pid).cpu_times()[:2])


def report(names: dict[str, str], concurrencies: list[int], figures: dict, args: argparse.Namespace) -> None:
    print(f"\nchild edges ({args.executor} executor), GET /{{edge}}/sysinfo/version, median of {args.rounds} "
          f"rounds of {args.seconds:g} s\n")
    busiest = max(concurrencies)
    print(f"| target | {' | '.join(('p50 ms' if c == 1 else 'req/s') + f' c={c}' for c in concurrencies)} "
          f"| parent agent CPU µs/request c={busiest} |")
    print("|---|" + "---|" * (len(concurrencies) + 1))
    med: dict[tuple[str, int], float] = {}
    for label in names:
        cells = []
        for c in concurrencies:
            rows = figures[(label, c)]
            value = statistics.median(r.p50_ms if c == 1 else r.rps for r in rows)
            med[(label, c)] = value
            cells.append(f"{value:.3f}" if c == 1 else f"{value:,.0f}")
        cpu = statistics.median(r.parent_cpu_us for r in figures[(label, busiest)])
        print(f"| {label} | {' | '.join(cells)} | {cpu:.0f} |")
    print()
    for label in ("child direct", "child relay"):
        parts = []
        for c in concurrencies:
            base, mine = med[("parent", c)], med[(label, c)]
            parts.append(f"+{mine - base:.3f} ms at c=1" if c == 1 else f"{100 * mine / base:.0f}% of the "
                         f"parent's req/s at c={c}")
        print(f"{label}: {'; '.join(parts)}")
    if 1 in concurrencies:
        added = med[("child relay", 1)] - med[("child direct", 1)]
        print(f"relay vs direct child: +{added:.3f} ms p50 at c=1 (budget 0.2 ms)")
    for c in concurrencies:
        if c > 1:
            share = med[("child relay", c)] / med[("parent", c)]
            print(f"relay child at c={c}: {100 * share:.0f}% of the parent's throughput (budget ≥ 70%)")


if __name__ == "__main__":
    raise SystemExit(main())
