#!/usr/bin/env python3
"""What an AI assistant does through the bridge's MCP server, scripted: pick a queue, submit
a job, wait for it and read its output, using only MCP tools (the official mcp SDK).

    export RADICAL_BRIDGE_URL=https://bridge.example.org
    export RADICAL_API_TOKEN=rda_…                       # an API token of yours
    python examples/mcp_assistant_session.py                       # first edge with psij, /bin/hostname
    python examples/mcp_assistant_session.py my-edge -- /bin/sh -c 'echo hello from $(hostname)'

Needs ``pip install "radical-edge-agent[mcp]"`` (or the bridge's requirements). With a batch
scheduler on the edge (queue_info), the job goes to the queue with the most idle nodes;
without one, it runs with the local executor. Every step is a tool call that the bridge
checks against your role and records in its audit trail, naming this script as the client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import Implementation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("edge", nargs="?", help="edge name (default: the first online edge with psij)")
    p.add_argument("command", nargs="*", default=["/bin/hostname"], help="program and arguments (after --)")
    p.add_argument("--url", default=os.environ.get("RADICAL_BRIDGE_URL", "http://127.0.0.1:8000"))
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job")
    return p.parse_args(argv)


async def tool(client: Client, name: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool; its structured answer, or SystemExit with the error the model would see."""
    result = await client.call_tool(name, arguments)
    if result.is_error:
        raise ToolFailed(" ".join(getattr(c, "text", "") for c in result.content))
    return result.structured_content or {}


class ToolFailed(Exception):
    pass


async def session(args: argparse.Namespace, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with (httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=args.timeout + 60)) as http,
                Client(streamable_http_client(args.url.rstrip("/") + "/mcp", http_client=http),
                       client_info=Implementation(name="example-assistant", version="1.0")) as client):
        edges = (await tool(client, "list_edges"))["edges"]
        usable = [e for e in edges if e["online"] and "psij" in e["plugins"]]
        edge = args.edge or (usable[0]["name"] if usable else None)
        if edge is None:
            print("no online edge with psij among yours:", [e["name"] for e in edges], file=sys.stderr)
            return 2
        print(f"edge: {edge}")

        executor, attributes = "local", None
        try:
            queues = (await tool(client, "list_queues", edge=edge))["queues"]
        except ToolFailed as exc:
            print(f"no batch scheduler to ask ({exc}); running it locally")
        else:
            best = next((q for q in queues if (q.get("nodes_idle") or 0) > 0), None)
            if best is not None:
                executor, attributes = "slurm", {"queue_name": best["name"], "node_count": 1, "duration": 600}
                print(f"queue: {best['name']} ({best['nodes_idle']} idle nodes)")

        key = uuid.uuid4().hex  # reused if we had to retry this very submission
        job = await tool(client, "submit_job", edge=edge, executable=args.command[0], arguments=args.command[1:],
                         executor=executor, idempotency_key=key, **({"attributes": attributes} if attributes else {}))
        print(f"job {job['job_id']} submitted ({job['state']})")
        status = await tool(client, "wait_job", edge=edge, job_id=job["job_id"], timeout=args.timeout)
        print(f"job {job['job_id']}: {status['state']} exit code {status.get('exit_code')}")
        offset = 0
        while True:  # page through the output as a model would
            out = await tool(client, "job_output", edge=edge, job_id=job["job_id"], offset=offset)
            sys.stdout.write(out["text"])
            offset = out["next_offset"]
            if not out["truncated"]:
                break
        if not status["finished"]:
            return 3
        return 0 if status["state"] == "COMPLETED" else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    token = os.environ.get("RADICAL_API_TOKEN")
    if not token:
        print("set RADICAL_API_TOKEN to one of your API tokens", file=sys.stderr)
        return 2
    try:
        return asyncio.run(session(args, token))
    except ToolFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
