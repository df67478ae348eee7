#!/usr/bin/env python3
"""Run many small tasks on an edge through your bridge, with a live progress line.

    export RADICAL_BRIDGE_URL=https://bridge.example.org
    export RADICAL_API_TOKEN=rda_…                       # an API token of yours
    python examples/rhapsody_tasks.py my-edge                          # 200 tasks: hostname and add()
    python examples/rhapsody_tasks.py my-edge --count 5000 --function noop
    python examples/rhapsody_tasks.py my-edge --count 50 -- /bin/sh -c 'echo $RANDOM'

Tasks go to the edge's rhapsody plugin in batches (``--batch``); the progress line shows
how many are done, failed and still running, and the rate. Ctrl-C closes the session,
which kills whatever is still running on the edge. The exit status is 0 when every task
succeeded, 1 otherwise (130 after Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from edge_agent.client import BridgeClient, BridgeError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("edge", help="edge name, as listed by the bridge")
    p.add_argument("command", nargs="*", help="program and arguments to run COUNT times (put them after --)")
    p.add_argument("--count", type=int, default=200, help="number of tasks (default 200)")
    p.add_argument("--function", help="run this registered function instead (e.g. noop, add, hostname)")
    p.add_argument("--args", default="[]", help="JSON list of arguments for --function")
    p.add_argument("--batch", type=int, default=1000, help="tasks per submit call (default 1000)")
    p.add_argument("--backend", default="concurrent", help="concurrent (default) or dask, if the edge has it")
    p.add_argument("--timeout", type=float, help="give up (and cancel) after this many seconds")
    p.add_argument("--ca-cert", default=os.environ.get("RADICAL_BRIDGE_CA_CERT"), help="CA bundle of the bridge")
    return p.parse_intermixed_args(argv)


def build_tasks(args: argparse.Namespace) -> list[dict]:
    if args.function:
        fn_args = json.loads(args.args)
        return [{"function": args.function, "args": fn_args, "name": f"{args.function}-{i}"}
                for i in range(args.count)]
    if args.command:
        return [{"executable": args.command[0], "arguments": args.command[1:], "name": f"task-{i}"}
                for i in range(args.count)]
    # The default demo: half executables, half Python functions registered on the edge.
    return [{"executable": "/bin/hostname", "name": f"host-{i}"} if i % 2 == 0 else
            {"function": "add", "args": [i, i], "name": f"add-{i}"} for i in range(args.count)]


def progress(stats: dict, total: int, started: float) -> str:
    counts = stats["tasks"]["by_state"]
    finished = counts["DONE"] + counts["FAILED"] + counts["CANCELED"]
    width = 30
    filled = int(width * finished / total) if total else width
    rate = finished / max(time.monotonic() - started, 1e-6)
    return (f"\r[{'#' * filled}{'.' * (width - filled)}] {finished}/{total}  done {counts['DONE']}  "
            f"failed {counts['FAILED'] + counts['CANCELED']}  running {counts['RUNNING']}  "
            f"queued {counts['QUEUED']}  {rate:,.0f} tasks/s ")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tasks = build_tasks(args)
    try:
        bc = BridgeClient(ca_cert=args.ca_cert)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rh = bc.get_edge_client(args.edge).get_plugin("rhapsody", backends=[args.backend])
    started = time.monotonic()
    deadline = None if args.timeout is None else started + args.timeout
    uids: list[str] = []
    try:
        for i in range(0, len(tasks), args.batch):
            uids += [t["uid"] for t in rh.submit_tasks(tasks[i:i + args.batch])]
        print(f"submitted {len(uids)} task(s) to {args.edge} in {time.monotonic() - started:.2f}s", file=sys.stderr)
        while True:
            stats = rh.statistics()
            print(progress(stats, len(uids), started), end="", file=sys.stderr, flush=True)
            if stats["tasks"]["active"] == 0:
                break
            if deadline is not None and time.monotonic() > deadline:
                print("\ntimed out: canceling the rest", file=sys.stderr)
                break
            time.sleep(0.5)
        print(file=sys.stderr)
        results = rh.wait_tasks(uids, timeout=0)
    except KeyboardInterrupt:
        print("\ninterrupted: closing the session (the edge kills what still runs)", file=sys.stderr)
        rh.close()
        return 130
    except BridgeError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        rh.close()
        return 1
    rh.close()  # also cancels whatever a timeout left running
    failed = [t for t in results if t["state"] != "DONE"]
    elapsed = time.monotonic() - started
    print(f"{len(results) - len(failed)} of {len(results)} task(s) succeeded in {elapsed:.2f}s "
          f"({len(results) / elapsed:,.0f} tasks/s)")
    for task in results[:3]:
        output = task["stdout"] if task["kind"] != "function" else json.dumps(task["return_value"])
        print(f"  {task['name']}: {task['state']} {(output or '').strip()[:60]}")
    for task in failed[:5]:
        print(f"  FAILED {task['name']}: {task['error']} {(task['stderr'] or '').strip()[:200]}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
