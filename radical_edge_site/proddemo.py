"""``make prod-demo``: the production layout of docs/OPERATIONS.md on one machine, to evaluate.

    python -m radical_edge_site.proddemo [--https-port 8443] [--ports 8001,8002]

Two bridge processes on PostgreSQL and Redis (``--database-url``, ``--redis-url``; the
database is created if missing), nginx with ``deploy/nginx/radical-edge.conf`` and a
certificate from a self-made CA (kept in ``var/prod-demo/tls/``), and a local agent that
connects through nginx and verifies that certificate. Prints how to use it; Ctrl-C stops all.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from radical_edge_site.nginx import ROOT, Nginx, nginx_binary

READY_TIMEOUT = 60.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make prod-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--https-port", type=int, default=8443)
    p.add_argument("--http-port", type=int, default=8080)
    p.add_argument("--ports", default="8001,8002", help="bridge processes, one per port")
    p.add_argument("--database-url", default=os.environ.get(
        "PROD_DEMO_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/radical_edge_demo"))
    p.add_argument("--redis-url", default=os.environ.get("PROD_DEMO_REDIS_URL", "redis://127.0.0.1:6379/3"))
    p.add_argument("--edge", default="local")
    p.add_argument("--plugins", default="sysinfo,psij,queue_info,rhapsody")
    p.add_argument("--var", type=Path, default=ROOT / "var" / "prod-demo")
    return p


def _secret(path: Path, make) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
    return path


def _tls(directory: Path) -> dict[str, Path]:
    """A CA and a certificate for localhost and 127.0.0.1, made once and kept."""
    files = {"ca": directory / "ca.pem", "cert": directory / "fullchain.pem", "key": directory / "privkey.pem"}
    if not all(p.exists() for p in files.values()):
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="Radical Edge prod-demo")
        cert = ca.issue_cert("localhost", "127.0.0.1")
        ca.cert_pem.write_to_path(str(files["ca"]))
        files["key"].touch(mode=0o600)
        cert.private_key_pem.write_to_path(str(files["key"]))
        for i, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(files["cert"]), append=i > 0)
    return files


def _create_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created PostgreSQL database {name}")


def _status(url: str, *, token: str | None = None, context: ssl.SSLContext | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url)  # noqa: S310 - our own local URLs
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _wait(ready, procs: list[subprocess.Popen], what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"error: a process exited with {proc.returncode} while waiting for {what}")
        try:
            if ready():
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise SystemExit(f"error: {what} not ready within {READY_TIMEOUT:.0f} s")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if nginx_binary() is None:
        print("error: nginx is not installed (apt-get install nginx)", file=sys.stderr)
        return 2
    var: Path = args.var.resolve()
    ports = [int(p) for p in args.ports.split(",")]
    base = f"https://localhost:{args.https_port}"
    tls = _tls(var / "tls")
    trust = ssl.create_default_context(cafile=str(tls["ca"]))
    _create_database(args.database_url)
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url,
        "DJANGO_SECRET_KEY_FILE": str(_secret(var / "secret_key", lambda: secrets.token_urlsafe(64))),
        "DJANGO_SECURE": "1", "RADICAL_BEHIND_TLS_PROXY": "1",
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"{base},https://127.0.0.1:{args.https_port}",
        "RADICAL_EDGE_VAR_DIR": str(var),
        "RADICAL_LOG_FORMAT": os.environ.get("RADICAL_LOG_FORMAT", "text"),
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    env.pop("DJANGO_SECRET_KEY", None)
    setup = subprocess.run([sys.executable, str(ROOT / "manage.py"), "demo_setup", "--edge", args.edge, "--json"],
                           env=env, cwd=ROOT, capture_output=True, text=True)
    if setup.returncode != 0:
        print(setup.stdout, setup.stderr, sep="\n", file=sys.stderr)
        return 1
    creds = json.loads(setup.stdout.strip().splitlines()[-1])

    procs: list[subprocess.Popen] = []
    nginx = Nginx(var / "nginx", https_port=args.https_port, http_port=args.http_port, upstreams=ports,
                  cert=tls["cert"], key=tls["key"])

    def stop(*_args) -> None:
        nginx.stop()
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(0)))
    try:
        def bridge(port: int) -> subprocess.Popen:
            print(f"starting a bridge process on 127.0.0.1:{port} …", flush=True)
            return subprocess.Popen([sys.executable, "-m", "radical_edge_site.server", "--host", "127.0.0.1",
                                     "--port", str(port)], env=env, cwd=ROOT)

        procs.extend(bridge(port) for port in ports)
        for port in ports:
            _wait(lambda p=port: _status(f"http://127.0.0.1:{p}/readyz")[0] == 200, procs, f"the bridge on {port}")
        print(f"starting nginx on {base} (prefix {nginx.prefix}) …")
        nginx.start()
        print(f"starting the demo edge '{args.edge}' through nginx …")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "--url", base, "--token-file", creds["edge_token_file"],
             "--ca-cert", str(tls["ca"]), "--plugins", args.plugins, "--state-dir", str(var / "agent"),
             "--option", "psij.poll_interval=1"], env=env, cwd=ROOT))

        def edge_online() -> bool:
            status, body = _status(f"{base}/edges", token=creds["api_token"], context=trust)
            return status == 200 and any(e["name"] == args.edge and e["connected"] for e in body.get("edges", []))

        _wait(edge_online, procs, f"edge '{args.edge}' through nginx")
        _banner(base, args, creds, tls, ports, procs)
        agent = procs[-1]
        while agent.poll() is None and nginx.proc.poll() is None:
            for i, port in enumerate(ports):
                if procs[i].poll() is not None:  # as systemd's Restart= would
                    print(f"the bridge process on {port} exited ({procs[i].returncode}); starting it again")
                    procs[i] = bridge(port)
                    print(f"  new pid {procs[i].pid}", flush=True)
            time.sleep(0.5)
        print("the agent or nginx exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping …")
        return 0
    finally:
        stop()


def _banner(base: str, args, creds: dict, tls: dict[str, Path], ports: list[int], procs) -> None:
    token = creds["api_token"]
    pids = ", ".join(f"{port}: pid {proc.pid}" for port, proc in zip(ports, procs))
    print(f"""
Radical Edge is running in the production layout (docs/OPERATIONS.md).

  Portal        {base}/          (trust {tls['ca']} in your browser, or accept the warning)
  Admin         {base}/admin/
  Log in as     {creds['username']} / {creds['password']}
  API token     {token}
  nginx         {args.http_port} → {args.https_port} (TLS) → bridge processes {pids}
  Database      {args.database_url}
  Redis         {args.redis_url}

Try the API:
  export TOKEN={token}
  curl --cacert {tls['ca']} -H "Authorization: Bearer $TOKEN" -X POST {base}/edge/list
  curl --cacert {tls['ca']} -N -H "Authorization: Bearer $TOKEN" "{base}/events?edge={args.edge}"

A rolling restart: `kill -TERM <pid>` one bridge process, then the other; each hands its
agents and event streams to the other process, exits, and is started again here (as
systemd's Restart= would), while calls through nginx keep working.

Press Ctrl-C to stop everything.
""", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
