"""Child edges: an agent started inside a batch job that this edge submits through psij.

The bridge asks for one (``POST /api/v1/edges/{parent}/children``): it issues the child's
token, bound to the child's name and lifetime, and calls ``launch`` here with it. This
plugin writes the token to a file only this account may read (mode 0600 in a 0700
directory; never on a command line, never in the job's environment), and submits, through
the psij plugin's job manager, a job that runs this agent's own interpreter with
``-m edge_agent --token-file … --lifetime <walltime>``. The child dials the bridge at the
URL this agent uses; it says ``bye`` before its walltime ends and exits when its token is
revoked (the bridge revokes it when the job ends or is stopped).

The job is an ordinary psij job of the caller: it shows in ``psij/list_jobs``, survives
agent restarts like any other (psij re-attaches), and its state events tell the bridge when
the child's allocation begins and ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...plugin import Caller, HTTPError, Plugin, Request, route
from ...relay import RelayServer, secrets_equal

log = logging.getLogger("edge_agent.plugins.edges")

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
PLUGIN_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
DEFAULT_PLUGINS = "sysinfo,psij,rhapsody,queue_info,files"
LAUNCH_FIELDS = ("name", "token", "executor", "queue", "account", "nodes", "duration", "plugins", "bye_margin",
                 "connectivity", "custom_attributes")
FINAL = ("COMPLETED", "FAILED", "CANCELED")
CONNECTIVITY = ("auto", "direct", "relay")
# What ``children`` shows of a child's record (not its relay secret).
PUBLIC_FIELDS = ("name", "job_id", "native_id", "executor", "state", "queue", "account", "nodes", "duration",
                 "connectivity")


class EdgesPlugin(Plugin):
    name = "edges"
    version = "1.0.0"
    description = "Child edges on compute nodes: an agent started inside a batch job, reached through the bridge."
    ui_schema = {
        "title": "Compute nodes",
        "icon": "server",
        "description": "Edges on compute nodes started from this edge: start them, and see or stop them, on this "
                       "edge's overview page (Edges on compute nodes).",
        "forms": [],
        "monitors": [],
        "notifications": [],
    }

    def __init__(self, host, config: dict[str, Any] | None = None) -> None:
        super().__init__(host, config)
        self.relay: RelayServer | None = None
        self._relay_lock = asyncio.Lock()

    @property
    def root(self) -> Path:
        return self.host.state_dir / "edges"

    async def start(self) -> None:
        await super().start()
        if (self.root / "relay.json").exists():
            # Children may be running that reach the bridge through us: be back where they look.
            try:
                await self._ensure_relay()
            except (OSError, ValueError) as exc:
                log.error("relay for child edges not started: %s", exc)

    async def stop(self) -> None:
        relay, self.relay = self.relay, None
        if relay is not None:
            await relay.stop()
        await super().stop()

    async def _ensure_relay(self) -> RelayServer:
        """Start the relay (once), on the port it had before a restart if it can."""
        async with self._relay_lock:
            if self.relay is not None:
                return self.relay
            url = urlsplit(self.host.bridge.get("url") or "")
            if not url.hostname:
                raise ValueError("this agent does not know its bridge's URL")
            port = url.port or (443 if url.scheme in ("https", "wss") else 80)
            relay = RelayServer((url.hostname, port), self._relay_allowed)
            state = self.root / "relay.json"
            try:
                previous = int(json.loads(state.read_text()).get("port", 0))
            except (OSError, ValueError, AttributeError):
                previous = 0
            host = str(self.config.get("relay_host", "0.0.0.0"))  # noqa: S104 - compute nodes must reach it
            try:
                bound = await relay.start(host, previous)
            except OSError:
                bound = await relay.start(host, 0)
                log.warning("relay port %d is taken; children relayed through it follow to port %d", previous, bound)
            _private_dir(self.root)
            _write_private(state, json.dumps({"port": bound}))
            self.relay = relay
            return relay

    def _relay_allowed(self, name: str, secret: str) -> bool:
        if not NAME_RE.match(name):
            return False
        try:
            child = json.loads((self.root / name / "child.json").read_text())
        except (OSError, ValueError):
            return False
        expected = child.get("relay_secret")
        return isinstance(expected, str) and bool(expected) and secrets_equal(expected, secret) \
            and (self.root / name / "token").exists()

    def _relay_url(self, name: str, secret: str) -> str:
        assert self.relay is not None
        address = str(self.config.get("relay_address") or socket.gethostname())
        return f"http://{name}:{secret}@{address}:{self.relay.port}"

    def _manager(self) -> Any:
        psij = self.host.plugins.get("psij")
        manager = getattr(psij, "manager", None)
        if manager is None:
            raise HTTPError(503, "psij_unavailable", "child edges are submitted through the psij plugin, which is "
                            "not running on this edge (start the agent with --plugins …,psij,edges)")
        return manager

    @staticmethod
    def _require_manager_role(caller: Caller) -> None:
        if caller.role not in ("owner", "admin"):
            raise HTTPError(403, "forbidden", "only the edge's owner or a site admin may start or stop child edges")

    # -- routes --------------------------------------------------------------------------

    @route("POST", "launch")
    async def launch(self, request: Request) -> dict[str, Any]:
        """Submit a batch job that runs a child agent. Body: ``name``, ``token`` (the child's
        edge token, from the bridge), ``executor``, ``queue``, ``account``, ``nodes``,
        ``duration`` (seconds), ``plugins`` (list or comma-separated), ``bye_margin``
        (seconds), ``connectivity`` (``direct``; ``auto`` means direct), ``custom_attributes``.
        Answers ``{name, job_id, native_id, executor, state}``."""
        self._require_manager_role(request.caller)
        body = request.json_object()
        launch = _parse_launch(body)
        manager = self._manager()
        url = self.config.get("child_url") or self.host.bridge.get("url")
        if not url:
            raise HTTPError(503, "bridge_url_unknown", "this agent does not know its bridge's URL (not started by "
                            "radical-edge-service)")
        if launch["connectivity"] != "direct":
            try:
                await self._ensure_relay()
            except (OSError, ValueError) as exc:
                raise HTTPError(503, "relay_unavailable", f"cannot start the relay for child edges: {exc}") from None
        return await asyncio.to_thread(self._launch, request.caller, manager, launch, str(url))

    def _launch(self, caller: Caller, manager: Any, launch: dict[str, Any], url: str) -> dict[str, Any]:
        from ..psij.spec import SpecError, parse_submit

        base = self.root / launch["name"]
        _private_dir(self.root)
        _private_dir(base)
        token_file = base / "token"
        _write_private(token_file, launch.pop("token"))
        args = ["-m", "edge_agent", "--url", url, "--token-file", str(token_file), "--name", launch["name"],
                "--state-dir", str(base / "state"), "--plugins", launch["plugins"],
                "--lifetime", f"{launch['duration']:g}", "--bye-margin", f"{launch['bye_margin']:g}", "-q",
                "--connectivity", launch["connectivity"]]
        secret = ""
        if launch["connectivity"] != "direct":
            secret = secrets.token_urlsafe(24)
            _write_private(base / "relay", self._relay_url(launch["name"], secret))
            args += ["--relay-file", str(base / "relay")]
        if self.host.bridge.get("ca_cert"):
            args += ["--ca-cert", str(self.host.bridge["ca_cert"])]
        if self.host.bridge.get("insecure"):
            args.append("--insecure")
        environment = {"PYTHONUNBUFFERED": "1"}
        if os.environ.get("PYTHONPATH"):  # an agent run from a source checkout
            environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
        attributes: dict[str, Any] = {"duration": launch["duration"]}
        if launch["queue"]:
            attributes["queue_name"] = launch["queue"]
        if launch["account"]:
            attributes["account"] = launch["account"]
        spec = {
            "executable": sys.executable, "arguments": args, "directory": str(base), "environment": environment,
            "stdout_path": str(base / "agent.out"), "stderr_path": str(base / "agent.err"),
            "name": f"edge-{launch['name']}"[:100], "attributes": attributes,
            "resources": {"node_count": launch["nodes"]},
        }
        if launch["custom_attributes"]:
            spec["custom_attributes"] = launch["custom_attributes"]
        try:
            submit = parse_submit({"job_spec": spec, "executor": launch["executor"]},
                                  default_executor=launch["executor"])
        except SpecError as exc:
            _remove(base)
            raise HTTPError(400, "invalid_launch", str(exc)) from None
        # Written before the job can start: the relay checks the child's secret in it.
        child = {"name": launch["name"], "job_id": None, "native_id": None, "executor": launch["executor"],
                 "state": "NEW", "queue": launch["queue"], "account": launch["account"], "nodes": launch["nodes"],
                 "duration": launch["duration"], "connectivity": launch["connectivity"], "relay_secret": secret}
        _write_private(base / "child.json", json.dumps(child))
        try:
            record, _ = manager.submit(caller, submit)
        except BaseException:
            _remove(base)
            raise
        child.update(job_id=record.job_id, native_id=record.native_id, executor=record.executor, state=record.state)
        _write_private(base / "child.json", json.dumps(child))
        log.info("child edge %s: job %s (%s %s) submitted by %s", launch["name"], record.job_id, record.executor,
                 record.native_id, caller.user or caller.uid)
        return _public(child)

    @route("GET", "children")
    def children(self, request: Request) -> dict[str, Any]:
        """``{"children": [{name, job_id, native_id, executor, state, …}]}``: the child edges
        this agent started whose jobs the caller may see. A child whose job has ended
        loses its token file here."""
        manager = self._manager()
        out = []
        for child in self._children():
            try:
                record = manager.get(request.caller, child["job_id"])
            except HTTPError:
                continue
            child["state"] = record.state
            if record.state in FINAL:
                _unlink(self.root / child["name"] / "token")
                _unlink(self.root / child["name"] / "relay")
            out.append(_public(child))
        return {"children": out}

    @route("POST", "stop/{name}")
    def stop_child(self, request: Request, name: str) -> dict[str, Any]:
        """Cancel the child's batch job (its agent gets SIGTERM and says bye) and remove its
        token file. Answers the child with its job's state."""
        self._require_manager_role(request.caller)
        child = self._child(name)
        manager = self._manager()
        try:
            answer = manager.cancel(request.caller, child["job_id"])
        except HTTPError as exc:
            if exc.error != "job_finished":
                raise
            answer = {"state": manager.get(request.caller, child["job_id"]).state}
        _unlink(self.root / name / "token")
        _unlink(self.root / name / "relay")
        return {**_public(child), "state": answer.get("state", child.get("state")), "stopped": True}

    # -- store ---------------------------------------------------------------------------

    @route("GET", "relay")
    def relay_status(self, request: Request) -> dict[str, Any]:
        """``{"listening", "port", "active", "served"}``: the relay children use when they
        cannot reach the bridge themselves."""
        relay = self.relay
        return {"listening": relay is not None, "port": relay.port if relay else None,
                "active": relay.active if relay else 0, "served": relay.served if relay else 0}

    def _children(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*/child.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return found

    def _child(self, name: str) -> dict[str, Any]:
        if not NAME_RE.match(name):
            raise HTTPError(404, "not_found", f"no child edge '{name}'")
        try:
            return json.loads((self.root / name / "child.json").read_text())
        except (OSError, ValueError):
            raise HTTPError(404, "not_found", f"no child edge '{name}' was started by this edge") from None


def _parse_launch(body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(LAUNCH_FIELDS))
    if unknown:
        raise HTTPError(400, "invalid_launch", f"unknown field {unknown[0]!r}; fields: {', '.join(LAUNCH_FIELDS)}")
    name = body.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise HTTPError(400, "invalid_launch", "name: 1-63 characters: lower-case letters, digits, '.', '_', '-'")
    token = body.get("token")
    if not isinstance(token, str) or not token.startswith("rde_") or len(token) > 200:
        raise HTTPError(400, "invalid_launch", "token: the child's edge token (rde_…), issued by the bridge")
    executor = body.get("executor") or "slurm"
    if not isinstance(executor, str):
        raise HTTPError(400, "invalid_launch", "executor: a psij executor name (slurm, pbs, local, …)")
    duration = body.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 10 <= duration <= 366 * 86400:
        raise HTTPError(400, "invalid_launch", "duration: the walltime in seconds, 10 or more")
    nodes = body.get("nodes", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= 100_000:
        raise HTTPError(400, "invalid_launch", "nodes: a positive whole number")
    margin = body.get("bye_margin", 30)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < duration:
        raise HTTPError(400, "invalid_launch", "bye_margin: seconds before the walltime, less than duration")
    plugins = body.get("plugins") or DEFAULT_PLUGINS
    if isinstance(plugins, list):
        plugins = ",".join(str(p) for p in plugins)
    names = [p.strip() for p in str(plugins).split(",") if p.strip()]
    if not names or not all(PLUGIN_RE.match(p) for p in names):
        raise HTTPError(400, "invalid_launch", "plugins: plugin names, a list or comma-separated")
    connectivity = body.get("connectivity") or "auto"
    if connectivity not in CONNECTIVITY:
        raise HTTPError(400, "invalid_launch", f"connectivity: one of {', '.join(CONNECTIVITY)}")
    custom = body.get("custom_attributes") or {}
    if not isinstance(custom, dict):
        raise HTTPError(400, "invalid_launch", "custom_attributes: an object, e.g. {\"slurm.qos\": \"debug\"}")
    return {"name": name, "token": token, "executor": executor.strip().lower(), "queue": _text(body, "queue"),
            "account": _text(body, "account"), "nodes": nodes, "duration": float(duration),
            "bye_margin": float(margin), "plugins": ",".join(names), "custom_attributes": custom,
            "connectivity": connectivity}


def _public(child: dict[str, Any]) -> dict[str, Any]:
    return {k: child.get(k) for k in PUBLIC_FIELDS}


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str) or len(value) > 200:
        raise HTTPError(400, "invalid_launch", f"{key}: a string")
    return value.strip()


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # an existing directory, or a umask that took bits away


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file no other account may read, created with mode 0600 (never
    briefly readable, as a write-then-chmod would be)."""
    _unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
