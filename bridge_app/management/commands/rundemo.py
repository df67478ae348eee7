"""Run the whole system on one machine: the bridge plus a local demo edge.

    python manage.py rundemo            # what `make run` does

Runs ``demo_setup`` (migrations, admin account, tokens), starts the bridge on
127.0.0.1:8000 and a local agent with every built-in plugin, waits until the edge is
online, prints how to use it, and stops both on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from io import StringIO
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

READY_TIMEOUT = 30.0


def _get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method)  # noqa: S310 - our own http://host:port
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (fixed local URL)
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


class Command(BaseCommand):
    help = "Set up and run the bridge and a local demo edge (Ctrl-C stops both)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--edge", default="local")
        parser.add_argument("--plugins", default="sysinfo,psij,queue_info,rhapsody,files")

    def handle(self, *args, host, port, edge, plugins, **options):
        out = StringIO()
        call_command("demo_setup", edge=edge, as_json=True, stdout=out)
        creds = json.loads(out.getvalue())
        base = f"http://{host}:{port}"
        env = dict(os.environ, RADICAL_LOG_FORMAT=os.environ.get("RADICAL_LOG_FORMAT", "text"))
        var = Path(settings.VAR_DIR)
        procs: list[subprocess.Popen] = []

        def stop(*_args) -> None:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()

        signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
        try:
            self.stdout.write(f"starting the bridge on {base} …")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "radical_edge_site.server", "--host", host, "--port", str(port)], env=env))
            self._wait(lambda: _get(f"{base}/healthz")[0] == 200, procs[0], "the bridge")
            self.stdout.write(f"starting the demo edge '{edge}' ({plugins}) …")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "--url", base, "--token-file", creds["edge_token_file"],
                 "--plugins", plugins, "--state-dir", str(var / "agent"),
                 "--option", "psij.poll_interval=1"], env=env))

            def edge_online() -> bool:
                status, body = _get(f"{base}/edges", creds["api_token"])
                return status == 200 and any(e["name"] == edge and e["connected"] for e in body.get("edges", []))

            self._wait(edge_online, procs[1], f"edge '{edge}'")
            self._banner(base, creds, edge)
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
            raise CommandError("a child process exited; stopping")
        except KeyboardInterrupt:
            self.stdout.write("\nstopping …")
        finally:
            stop()

    def _wait(self, ready, proc: subprocess.Popen, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CommandError(f"{what} exited with code {proc.returncode}")
            try:
                if ready():
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise CommandError(f"{what} did not become ready within {READY_TIMEOUT:.0f}s")

    def _banner(self, base: str, creds: dict, edge: str) -> None:
        token = creds["api_token"]
        self.stdout.write(self.style.SUCCESS(f"""
Radical Edge is running.

  Portal        {base}/
  Admin         {base}/admin/
  Log in as     {creds['username']} / {creds['password']}
  API token     {token}
  API schema    {base}/api/v1/schema/

Try the API:
  export TOKEN={token}
  curl -H "Authorization: Bearer $TOKEN" -X POST {base}/edge/list
  SID=$(curl -s -H "Authorization: Bearer $TOKEN" -X POST {base}/{edge}/sysinfo/register_session \\
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["sid"])')
  curl -H "Authorization: Bearer $TOKEN" {base}/{edge}/sysinfo/metrics/$SID

Or the SDK:
  .venv/bin/python -c "from edge_agent.client import BridgeClient; \\
print(BridgeClient('{base}', token='$TOKEN').get_edge_client('{edge}').get_plugin('sysinfo').get_metrics()['cpu'])"

Or an AI assistant (MCP, docs/MCP.md):
  claude mcp add --transport http radical-edge {base}/mcp --header "Authorization: Bearer $TOKEN"
  .venv/bin/radical-edge mcp --url {base} --token-file var/demo-api.token      # stdio clients

Press Ctrl-C to stop.
"""))
