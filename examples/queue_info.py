#!/usr/bin/env python3
"""Show an edge's queues, jobs and allocations (Slurm or PBS) through your bridge.

    export RADICAL_BRIDGE_URL=https://bridge.example.org
    export RADICAL_API_TOKEN=rda_…                       # an API token of yours
    python examples/queue_info.py my-edge                 # queues, every queued/running job, your allocations
    python examples/queue_info.py my-edge --queue debug --user alice
    python examples/queue_info.py my-edge --state all --allocations-of '*' --force
    python examples/queue_info.py my-edge --json          # the raw answers

Times: queue limits in minutes, job times as [D-]HH:MM:SS. The exit status is 0 on success,
2 for a usage error, 1 when the bridge or the edge's scheduler could not answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from edge_agent.client import BridgeClient, BridgeError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("edge", help="edge name, as listed by the bridge")
    p.add_argument("--queue", help="only this queue's jobs")
    p.add_argument("--user", help="only this user's jobs")
    p.add_argument("--state", help="job states: RUNNING, PENDING,… or 'all' (default: queued and running)")
    p.add_argument("--allocations-of", metavar="USER",
                   help="whose allocations (default: the user the edge agent runs as; '*' for everyone)")
    p.add_argument("--no-jobs", action="store_true", help="skip the job list")
    p.add_argument("--no-allocations", action="store_true", help="skip the allocations")
    p.add_argument("--force", action="store_true", help="bypass the edge's cache")
    p.add_argument("--json", action="store_true", help="print the raw JSON answers")
    p.add_argument("--ca-cert", default=os.environ.get("RADICAL_BRIDGE_CA_CERT"), help="CA bundle of the bridge")
    return p.parse_args(argv)


def table(rows: Iterable[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Rows as a plain-text table; ``columns`` are (key, heading) pairs."""
    rows = list(rows)
    if not rows:
        return "  (none)"
    cells = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(head), *(len(r[i]) for r in cells)) for i, (_, head) in enumerate(columns)]
    numeric = [all(isinstance(row.get(key), (int, float)) or row.get(key) is None for row in rows)
               for key, _ in columns]
    lines = ["  " + "  ".join(head.ljust(w) for (_, head), w in zip(columns, widths)),
             "  " + "  ".join("-" * w for w in widths)]
    for r in cells:
        lines.append("  " + "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(r, widths, numeric)))
    return "\n".join(line.rstrip() for line in lines)


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def duration(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{days}-" if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def when(epoch: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else "-"


def show_queues(info: dict[str, Any]) -> None:
    meta = info["meta"]
    print(f"Queues ({meta['backend']}, {meta['mode']} output, {meta['age_seconds']:.0f} s old)")
    rows = [{**q, "name": q["name"] + ("*" if q["default"] else "")} for q in info["queues"].values()]
    print(table(rows, [("name", "QUEUE"), ("state", "STATE"), ("time_limit", "LIMIT(min)"),
                       ("nodes_total", "NODES"), ("nodes_available", "AVAIL"), ("nodes_idle", "IDLE"),
                       ("cpus_per_node", "CPUS/NODE"), ("mem_per_node_mb", "MEM/NODE(MiB)"),
                       ("gpus_per_node", "GPUS/NODE"), ("features", "FEATURES")]))
    print("  (* the default queue)")


def show_jobs(answer: dict[str, Any], title: str) -> None:
    print(f"\n{title} ({len(answer['jobs'])})")
    rows = [{**j, "time_used": duration(j["time_used"]),
             "time_limit": duration(j["time_limit"] * 60) if j["time_limit"] is not None else "UNLIMITED",
             "submit_time": when(j["submit_time"])} for j in answer["jobs"]]
    rows = [{**r, "where": r["node_list"] or r["reason"]} for r in rows]
    print(table(rows, [("job_id", "JOB"), ("job_name", "NAME"), ("user", "USER"), ("partition", "QUEUE"),
                       ("state", "STATE"), ("nodes", "NODES"), ("cpus", "CPUS"), ("time_used", "USED"),
                       ("time_limit", "LIMIT"), ("submit_time", "SUBMITTED"), ("account", "ACCOUNT"),
                       ("where", "NODELIST(REASON)")]))


def show_allocations(answer: dict[str, Any]) -> None:
    who = "everyone" if answer["user"] == "*" else answer["user"]
    print(f"\nAllocations of {who}")
    print(table(answer["allocations"], [("account", "ACCOUNT"), ("user", "USER"), ("partition", "PARTITION"),
                                        ("fairshare", "FAIRSHARE"), ("qos", "QOS"), ("max_jobs", "MAXJOBS"),
                                        ("max_submit", "MAXSUBMIT"), ("max_wall", "MAXWALL(min)"),
                                        ("grp_tres", "GRPTRES")]))
    for note in answer["meta"]["notes"]:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bridge = BridgeClient(ca_cert=args.ca_cert)  # URL and token from RADICAL_BRIDGE_URL / RADICAL_API_TOKEN
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with bridge:
        qi = bridge.get_edge_client(args.edge).get_plugin("queue_info")
        try:
            answers: dict[str, Any] = {"queues": qi.get_info(force=args.force)}
            if not args.no_jobs:
                answers["jobs"] = qi.list_jobs(args.queue, user=args.user, state=args.state, force=args.force)
            if not args.no_allocations:
                answers["allocations"] = qi.list_allocations(user=args.allocations_of, force=args.force)
        except BridgeError as exc:
            print(f"{args.edge}: {exc.status} {exc.error}: {exc.detail}", file=sys.stderr)
            stderr = (exc.body or {}).get("stderr") if isinstance(exc.body, dict) else None
            if stderr:
                print(f"  the scheduler said: {stderr}", file=sys.stderr)
            return 1
        finally:
            qi.close()
    if args.json:
        print(json.dumps(answers, indent=2))
        return 0
    show_queues(answers["queues"])
    if "jobs" in answers:
        scope = [f"queue {args.queue}" if args.queue else "all queues", f"user {args.user}" if args.user else None,
                 f"state {args.state}" if args.state else None]
        show_jobs(answers["jobs"], "Jobs in " + ", ".join(s for s in scope if s))
    if "allocations" in answers:
        show_allocations(answers["allocations"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
