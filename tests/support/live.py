"""Real processes for end-to-end tests: a bridge server and edge agents on 127.0.0.1.

The bridge runs exactly as in production (``python -m radical_edge_site.server``) with its
own state directory; in "scaled" mode it uses a fresh PostgreSQL database and a Redis
database of its own instead of SQLite and the in-memory layer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("POSTGRES_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def worker_redis_url(url: str, worker: str | None = None) -> str:
    """The Redis database of this pytest-xdist worker: ``gwN`` uses the database N below the
    one in ``url`` (gw0 the given one: 15, 14, 13 by default), so that a worker's flushdb or
    keys never touch another's. Outside xdist, ``url`` itself."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    if not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    db = base - int(worker[2:])
    if db < 0:
        raise RuntimeError(f"REDIS_TEST_URL {url}: no Redis database left for pytest-xdist worker {worker} "
                           "(worker gwN uses the database N below the given one): give a higher one")
    return urlunsplit(parts._replace(path=f"/{db}"))


REDIS_URL = worker_redis_url(os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15"))
#: The password of every user that LiveBridge.seed and create_user make.
PASSWORD = "pw-" + "x" * 12


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def base_env(var_dir: Path, extra: dict[str, str] | None = None, root: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_SETTINGS_MODULE")}
    env.update({
        "RADICAL_EDGE_VAR_DIR": str(var_dir),
        "RADICAL_LOG_FORMAT": "text",
        "RADICAL_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(root) + os.pathsep + env.get("PYTHONPATH", ""),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def start_all(bridges: list[LiveBridge], timeout: float = 60.0) -> list[LiveBridge]:
    """Start bridge processes together (each spends a few seconds importing Django), then
    wait until every one answers."""
    for bridge in bridges:
        bridge.start(wait=False)
    for bridge in bridges:
        bridge.wait_ready(timeout)
    return bridges


class ScaledBackends:
    """A throwaway PostgreSQL database and Redis database for one test session."""

    def __init__(self) -> None:
        self.db_name = f"radical_edge_e2e_{uuid.uuid4().hex[:10]}"
        base = POSTGRES_URL.rsplit("/", 1)[0]
        self.database_url = f"{base}/{self.db_name}"
        self.redis_url = REDIS_URL

    def create(self) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                "DJANGO_SECRET_KEY": "e2e-" + "x" * 60}


class _Process:
    """A child process whose output goes to ``log_path``."""

    proc: subprocess.Popen | None = None
    log_path: Path
    root: Path = ROOT  # the checkout whose code runs (bench: another one, for a baseline)

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class LiveBridge(_Process):
    """A bridge server process. ``manage()`` runs management commands against its state."""

    def __init__(self, var_dir: Path, *, env: dict[str, str] | None = None, port: int | None = None,
                 server: str = "uvicorn", workers: int = 1, root: Path = ROOT) -> None:
        self.root = root
        self.var_dir = var_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = server
        self.workers = workers
        self.env = base_env(var_dir, env, root)
        self.proc: subprocess.Popen | None = None
        self.log_path = var_dir / f"bridge-{self.port}.log"
        var_dir.mkdir(parents=True, exist_ok=True)

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, str(self.root / "manage.py"), *args], env=self.env, cwd=self.root,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def migrate(self, template: Path | None = None) -> None:
        """Migrate the database; with ``template`` (an already migrated SQLite file of the
        same code), copy it instead, which is much faster."""
        if template is not None and "DATABASE_URL" not in self.env:
            shutil.copyfile(template, self.var_dir / "db.sqlite3")
            return
        self.manage("migrate", "--noinput", "-v", "0")

    def start(self, wait: bool = True) -> LiveBridge:
        self._spawn([sys.executable, "-m", "radical_edge_site.server", "--host", "127.0.0.1", "--port",
                     str(self.port), "--server", self.server, "--workers", str(self.workers)], self.env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}:\n{self.log()}")
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

        wait_for(ready, timeout, what="bridge /healthz")


    # -- credentials ---------------------------------------------------------------------

    def create_user(self, username: str, *, superuser: bool = False, password: str = PASSWORD) -> None:
        code = (
            "from django.contrib.auth import get_user_model as g; U=g(); "
            f"u,_=U.objects.get_or_create(username={username!r}); u.set_password({password!r}); "
            f"u.is_superuser=u.is_staff={superuser!r}; u.save()"
        )
        self.manage("shell", "-c", code)

    def seed(self, *, users: list[str] = (), superusers: list[str] = (), api_tokens: list[str] = (),
             read_only_tokens: list[str] = (), edge_tokens: list[tuple[str, str | None]] = (),
             grants: list[tuple[str, str, str]] = ()) -> dict[str, dict[str, str]]:
        """Create users, tokens and grants (``(edge, user, role)``) in one management command
        run (each run costs a Django start-up). Returns ``{"api": {user: token, "USER-read":
        read-only token}, "edge": {edge: token}}``."""
        spec = json.dumps({"users": [[u, False] for u in users] + [[u, True] for u in superusers],
                           "api": list(api_tokens), "read": list(read_only_tokens),
                           "edges": [list(e) for e in edge_tokens], "grants": [list(g) for g in grants]})
        out = self.manage("shell", "-c", _SEED.format(spec=spec, password=PASSWORD)).stdout
        return json.loads(out.strip().splitlines()[-1])

    def edge_token(self, name: str, owner: str | None = None) -> str:
        args = ["edge_token_create", name] + (["--owner", owner] if owner else [])
        return self.manage(*args).stdout.strip().splitlines()[-1]

    def api_token(self, username: str, *extra: str) -> str:
        return self.manage("api_token_create", username, *extra).stdout.strip().splitlines()[-1]

    def wait_edge_visible(self, token: str, edge: str, timeout: float = 30) -> None:
        """Wait until ``token``'s user may reach ``edge`` through the proxy. A grant made with
        ``manage.py`` reaches a running embedded bridge within CACHE_TTL (the command's
        process cannot tell it: the in-memory layer is per process), not at once."""
        def visible() -> bool:
            with self.client(token) as c:
                return c.get(f"/{edge}/zz/zz").json().get("error") != "unknown_edge"

        wait_for(visible, timeout, interval=0.25, what=f"edge {edge} visible to the new grantee")

    def client(self, token: str, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def edge_online(self, token: str, name: str) -> bool:
        with self.client(token) as c:
            edges = c.get("/edges").json()["edges"]
        return any(e["name"] == name and e["connected"] for e in edges)


_SEED = """
import json
from django.contrib.auth import get_user_model
from bridge_app.domain import services
from bridge_app.models import Edge
spec = json.loads({spec!r})
U = get_user_model()
out = {{"api": {{}}, "edge": {{}}}}
for name, su in spec["users"]:
    u, _ = U.objects.get_or_create(username=name)
    u.set_password({password!r})
    u.is_superuser = u.is_staff = su
    u.save()
for name in spec["api"]:
    out["api"][name] = services.api_token_create(user=U.objects.get(username=name))[1]
for name in spec["read"]:
    out["api"][name + "-read"] = services.api_token_create(user=U.objects.get(username=name), scope="read")[1]
for edge, owner in spec["edges"]:
    user = U.objects.get(username=owner) if owner else None
    out["edge"][edge] = services.edge_token_create(name=edge, owner=user)[1]
for edge, name, role in spec["grants"]:
    services.grant_set(edge=Edge.objects.get(name=edge), role=role, user=U.objects.get(username=name))
print(json.dumps(out))
"""


class AgentProcess(_Process):
    """A real ``python -m edge_agent`` process."""

    def __init__(self, bridge_url: str, token: str, var_dir: Path, *, plugins: str = "sysinfo",
                 name: str | None = None, options: list[str] | None = None, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, root: Path = ROOT) -> None:
        self.root = root
        self.state_dir = var_dir / f"agent-{uuid.uuid4().hex[:6]}"
        self.state_dir.mkdir(parents=True)
        # Beside the state directory, not in it: jobs' working directories are in there.
        self.token_file = var_dir / f"{self.state_dir.name}.token"
        self.token_file.write_text(token)
        self.token_file.chmod(0o600)
        self.log_path = self.state_dir / "agent.log"
        cmd = [sys.executable, "-m", "edge_agent", "--url", bridge_url, "--token-file", str(self.token_file),
               "--plugins", plugins, "--state-dir", str(self.state_dir), "-v"]
        if name:
            cmd += ["--name", name]
        for opt in options or []:
            cmd += ["--option", opt]
        cmd += extra_args or []
        self.cmd = cmd
        self.env = base_env(var_dir, env, root)
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        self._spawn(self.cmd, self.env)
        return self


class ModuleSite:
    """A bridge of one test module's own (SQLite copied from the migrated template), its users,
    tokens and grants created in one management command, and the agents its tests start.

    For module-scoped fixtures: ``close()`` stops every process and prints their logs if a
    test of the module failed. ``seed`` takes :meth:`LiveBridge.seed`'s arguments."""

    def __init__(self, request: Any, var: Path, *, template: Path | None = None, env: dict[str, str] | None = None,
                 **seed: Any) -> None:
        self.var = var
        self.bridge = LiveBridge(var / "bridge", env=env)
        self.url = self.bridge.url
        self.bridge.migrate(template=template)
        self.bridge.start()
        self.seeded = self.bridge.seed(**seed)
        self.tokens: dict[str, str] = self.seeded["api"]
        self.agents: list[AgentProcess] = []
        self._request = request
        self._failed_before = request.session.testsfailed

    def agent_for(self, edge: str, **kwargs: Any) -> AgentProcess:
        """A real agent for ``edge`` (seeded with an edge token), ``AgentProcess`` arguments."""
        agent = AgentProcess(self.url, self.seeded["edge"][edge], self.var, **kwargs).start()
        self.agents.append(agent)
        return agent

    def wait_online(self, edge: str, user: str, timeout: float = 30) -> None:
        wait_for(lambda: self.bridge.edge_online(self.tokens[user], edge), timeout, what=f"edge {edge} online")

    def api(self, user: str) -> httpx.Client:
        return self.bridge.client(self.tokens[user])

    def close(self) -> None:
        failed = self._request.session.testsfailed > self._failed_before
        for proc in [*self.agents, self.bridge]:
            proc.stop()
            if failed:
                print(f"--- {type(proc).__name__} log ---\n{proc.log()[-6000:]}")
