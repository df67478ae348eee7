"""rhapsody tasks per second end to end: submit + wait through a real bridge and agent.

    python -m bench.rhapsody_throughput                       # noop and /bin/true, batches 1..4096
    python -m bench.rhapsody_throughput --kinds noop --batches 128,1024 --min-tasks 4000
    python -m bench.rhapsody_throughput --markdown docs/BENCHMARKS.md   # rewrite that section

Starts everything itself on 127.0.0.1 (an embedded bridge, one agent with the rhapsody
plugin), then for each task kind and batch size repeats rounds of ``submit_tasks(batch)``
+ ``wait_tasks(uids)`` through the SDK until ``--min-tasks`` tasks ran (at least
``--min-rounds`` rounds), one round at a time. Tasks/s is tasks over the wall time of all
rounds; p50/p99 are per round (shown only with enough rounds to mean something). CPU
columns are the agent's and the bridge's CPU microseconds per task, a figure that stays
meaningful on a machine busy with other work; RSS is measured after each row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.proxy import cpu_seconds, rss_mb
from edge_agent.client import BridgeClient
from tests.support.live import AgentProcess, LiveBridge, wait_for

EDGE = "bench-rhapsody"
KINDS = {
    "noop": {"function": "noop"},
    "true": {"executable": "/bin/true"},
}
SECTION = "## rhapsody throughput"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def run_rows(rh, kind: str, batches: list[int], min_tasks: int, min_rounds: int, pids: dict[str, int]) -> list[dict]:
    rows = []
    template = KINDS[kind]
    rh.run_tasks([template] * 64, timeout=120)  # warm-up: imports, first processes, connections
    for batch in batches:
        rounds = max(min_rounds, -(-min_tasks // batch))
        tasks = [template] * batch
        latencies = []
        failed = 0
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        for _ in range(rounds):
            t0 = time.perf_counter()
            done = rh.wait_tasks(rh.submit_tasks(tasks), timeout=600)
            latencies.append(time.perf_counter() - t0)
            failed += sum(1 for t in done if t["state"] != "DONE")
        elapsed = time.perf_counter() - started
        total = batch * rounds
        row = {
            "kind": kind, "batch": batch, "rounds": rounds, "tasks": total, "seconds": elapsed,
            "tasks_per_s": total / elapsed, "failed": failed,
            "p50_ms": statistics.median(latencies) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3 if rounds >= 20 else None,
        }
        for name, pid in pids.items():
            row[f"cpu_us_{name}"] = (cpu_seconds(pid) - before[name]) * 1e6 / total
            row[f"rss_mb_{name}"] = rss_mb(pid)
        rows.append(row)
        print(f"  {kind:5s} batch {batch:5d}: {total:6d} tasks in {elapsed:6.2f}s = {row['tasks_per_s']:7.0f}/s",
              file=sys.stderr)
    return rows


def spawn_baseline(n: int = 1000) -> dict[str, float]:
    """``/bin/true`` per second started straight from Python (Popen with pipes, in a new
    session; reaped afterwards), from one thread and from three: what fork/exec alone
    allows on this machine."""
    def one(_: int) -> subprocess.Popen:
        proc = subprocess.Popen(["/bin/true"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        proc.stdout.close()
        proc.stderr.close()
        return proc

    rates = {}
    for threads in (1, 3):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            procs = list(pool.map(one, range(n)))
        rates[f"{threads} thread{'s' if threads > 1 else ''}"] = n / (time.perf_counter() - started)
        for proc in procs:
            proc.wait()
    return rates


def table(rows: list[dict]) -> str:
    lines = [
        "| task | batch | tasks | seconds | tasks/s | p50 ms/batch | p99 ms/batch | agent CPU µs/task | "
        "bridge CPU µs/task | agent RSS MB | bridge RSS MB |",
        "|------|------:|------:|--------:|--------:|-------------:|-------------:|------------------:|"
        "-------------------:|-------------:|--------------:|",
    ]
    for r in rows:
        task = "noop function" if r["kind"] == "noop" else "/bin/true"
        p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-"
        lines.append(
            f"| {task} | {r['batch']} | {r['tasks']} | {r['seconds']:.2f} | {r['tasks_per_s']:.0f} | "
            f"{r['p50_ms']:.1f} | {p99} | {r['cpu_us_agent']:.0f} | {r['cpu_us_bridge']:.0f} | "
            f"{r['rss_mb_agent']:.0f} | {r['rss_mb_bridge']:.0f} |")
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) this benchmark's section of ``path``; other sections stay."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body.rstrip("\n") + "\n" + (text[end:] if end >= 0 else "")
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", default="noop,true", help="comma list of: " + ", ".join(KINDS))
    p.add_argument("--batches", default="1,16,128,1024,4096")
    p.add_argument("--min-tasks", type=int, default=2000, help="tasks per row at least")
    p.add_argument("--min-rounds", type=int, default=3, help="rounds per row at least")
    p.add_argument("--server", default="uvicorn", choices=["uvicorn", "daphne"])
    p.add_argument("--option", action="append", default=[], help="agent option, e.g. rhapsody.max_processes=16")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--markdown", help="write the table into this file's '## rhapsody throughput' section")
    args = p.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    batches = [int(b) for b in args.batches.split(",")]
    rows: list[dict] = []
    baseline = spawn_baseline() if "true" in kinds else {}
    with tempfile.TemporaryDirectory(prefix="bench-rhapsody-") as tmp:
        var = Path(tmp)
        # The bridge's per-user and per-edge rate limits would cap small batches at their
        # rate (2 calls per round): this measures the proxy and the plugin, not the policy.
        env = {"RADICAL_LOG_LEVEL": "WARNING", "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0"}
        bridge = LiveBridge(var, env=env, server=args.server)
        bridge.migrate()
        bridge.create_user("bench", superuser=True)
        token = bridge.api_token("bench")
        edge_token = bridge.edge_token(EDGE, owner="bench")
        bridge.start()
        agent = AgentProcess(bridge.url, edge_token, var, plugins="rhapsody", options=args.option,
                             extra_args=["-q"]).start()
        try:
            wait_for(lambda: bridge.edge_online(token, EDGE), 30, what="bench edge online")
            pids = {"agent": agent.proc.pid, "bridge": bridge.proc.pid}
            with BridgeClient(bridge.url, token=token, timeout=600) as bc:
                for kind in kinds:
                    with bc.get_edge_client(EDGE).get_plugin("rhapsody", backends=["concurrent"]) as rh:
                        rows += run_rows(rh, kind, batches, args.min_tasks, args.min_rounds, pids)
        finally:
            agent.stop()
            bridge.stop()
    load = os.getloadavg()[0]
    header = (f"{SECTION}\n\nSubmit + wait through a real bridge ({args.server}, embedded mode) and agent on "
              f"127.0.0.1, one batch at a time, via the SDK; {os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}, load average {load:.1f} at the end "
              f"(`python -m bench.rhapsody_throughput`).\n")
    text = header + "\n" + table(rows) + "\n"
    text += ("\nHow to read it: batch 1 is two round trips per task (submit, then wait), so it measures "
             "request latency, not the plugin. Function tasks cost the agent about 120-250 µs of CPU each, "
             "request and answer included; executables add a fork/exec each, so they are bound by how fast "
             "this machine starts processes (last line). The original RADICAL Edge peaked near 450 tasks/s "
             "at batch 128 and fell to about 130 at batch 2048. Figures move with other work on the machine "
             "(see the load average); the CPU columns move less.\n")
    if baseline:
        text += ("\nFor scale: `/bin/true` started straight from Python on this machine (Popen with pipes, "
                 "no output read, reaped afterwards; no bridge, no agent): "
                 + ", ".join(f"{rate:,.0f}/s from {label}" for label, rate in baseline.items()) + ".\n")
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.markdown:
        write_section(Path(args.markdown), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
