#!/usr/bin/env python3
"""Submit a batch job to an edge through your bridge, stream its output, and wait for it.

    export RADICAL_BRIDGE_URL=https://bridge.example.org
    export RADICAL_API_TOKEN=rda_…                       # an API token of yours
    python examples/psij_submit.py my-edge -- /bin/hostname
    python examples/psij_submit.py my-edge --executor slurm --queue debug --account proj1 \\
        --duration 600 --nodes 1 --option slurm.constraint=cpu -- /bin/sh -c 'echo $SLURM_JOB_ID; sleep 5'

The exit status is the job's exit code (1 if it failed without one, 130 if you pressed
Ctrl-C, which also cancels the job unless you pass --detach). Re-running the same command
with the same --key never submits a second job: it follows the first one.
"""

from __future__ import annotations

import argparse
import os
import sys

from edge_agent.client import BridgeClient, BridgeError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("edge", help="edge name, as listed by the bridge")
    p.add_argument("command", nargs="+", help="program and its arguments (put them after --)")
    p.add_argument("--executor", default="local", help="local, slurm, pbs, lsf, … (default: local)")
    p.add_argument("--queue", help="queue / partition")
    p.add_argument("--account", help="account / project to charge")
    p.add_argument("--duration", type=float, help="wall time in seconds")
    p.add_argument("--nodes", type=int, help="node count")
    p.add_argument("--processes", type=int, help="process count")
    p.add_argument("--name", help="job name shown by the scheduler")
    p.add_argument("--directory", help="working directory on the edge (absolute)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment variable")
    p.add_argument("--option", action="append", default=[], metavar="SCHED.KEY=VALUE",
                   help="scheduler option, e.g. slurm.constraint=gpu")
    p.add_argument("--key", help="idempotency key: re-running with the same key follows the same job")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.add_argument("--detach", action="store_true", help="print the job id and exit without waiting")
    p.add_argument("--ca-cert", default=os.environ.get("RADICAL_BRIDGE_CA_CERT"), help="CA bundle of the bridge")
    return p.parse_args(argv)


def build_spec(args: argparse.Namespace) -> dict:
    attributes = {k: v for k, v in {
        "queue_name": args.queue, "account": args.account, "duration": args.duration,
        "node_count": args.nodes, "process_count": args.processes,
    }.items() if v is not None}
    spec: dict = {"executable": args.command[0], "arguments": args.command[1:], "attributes": attributes,
                  "environment": dict(_pair(e, "--env") for e in args.env),
                  "custom_attributes": dict(_pair(o, "--option") for o in args.option)}
    if args.name:
        spec["name"] = args.name
    if args.directory:
        spec["directory"] = args.directory
    return spec


def _pair(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"{flag} needs KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bridge = BridgeClient(ca_cert=args.ca_cert)  # URL and token from RADICAL_BRIDGE_URL / RADICAL_API_TOKEN
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with bridge:
        psij = bridge.get_edge_client(args.edge).get_plugin("psij")
        try:
            job = psij.submit_job(build_spec(args), executor=args.executor, idempotency_key=args.key)
        except BridgeError as exc:
            print(f"submit failed ({exc.status} {exc.error}): {exc.detail}", file=sys.stderr)
            return 2
        note = " (already submitted with this key)" if job.get("replayed") else ""
        print(f"job {job['job_id']} ({args.executor} {job['native_id']}){note}", file=sys.stderr)
        if args.detach:
            print(job["job_id"])
            return 0
        try:
            for stream, text in psij.follow_output(job["job_id"], timeout=args.timeout):
                (sys.stdout if stream == "stdout" else sys.stderr).write(text)
                (sys.stdout if stream == "stdout" else sys.stderr).flush()
            final = psij.get_job_status(job["job_id"], output=False)
        except KeyboardInterrupt:
            print(f"\ncancelling job {job['job_id']}", file=sys.stderr)
            psij.cancel_job(job["job_id"])
            return 130
        except TimeoutError as exc:
            print(f"{exc} (it keeps running; follow it with --key or the job id)", file=sys.stderr)
            return 3
        except BridgeError as exc:
            print(f"lost track of the job ({exc.status} {exc.error}): {exc.detail}", file=sys.stderr)
            return 2
    message = f": {final['message']}" if final.get("message") else ""
    print(f"job {final['job_id']} {final['state']} exit_code={final['exit_code']}{message}", file=sys.stderr)
    if final["state"] == "COMPLETED":
        return 0
    return final["exit_code"] if isinstance(final["exit_code"], int) and 0 < final["exit_code"] < 256 else 1


if __name__ == "__main__":
    raise SystemExit(main())
