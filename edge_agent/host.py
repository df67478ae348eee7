"""The plugin host: the agent's plugins, their event queue and their session sweeper.

The host outlives connections: it is created once, and every connection to the bridge
dispatches requests into it and drains its event queue. Events emitted while no
connection is up wait in the queue and are sent after the next ``welcome``.
"""

from __future__ import annotations

import asyncio
import collections
import getpass
import logging
import os
import platform
import socket
import threading
import time
from pathlib import Path
from typing import Any

from . import __version__
from .plugin import Caller, HTTPError, Plugin, Request, Response
from .ui_schema import UISchemaError, ui_schema_parse

log = logging.getLogger("edge_agent.host")

# Events kept while the bridge is unreachable. Beyond this the oldest are dropped (and
# counted), so a long outage cannot exhaust the node's memory.
MAX_PENDING_EVENTS = 100_000


class PluginHost:
    """Owns the plugin instances and routes requests and events for them."""

    def __init__(
        self,
        plugin_classes: list[type[Plugin]],
        *,
        state_dir: Path | None = None,
        config: dict[str, dict[str, Any]] | None = None,
        sweep_interval: float = 60.0,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.sweep_interval = sweep_interval
        # How the agent reaches its bridge ({"url", "ca_cert", "insecure"}; set by the CLI):
        # the edges plugin starts child agents that dial the same way.
        self.bridge: dict[str, Any] = {}
        self.plugins: dict[str, Plugin] = {}
        self.events: collections.deque[dict[str, Any]] = collections.deque()
        self.events_dropped = 0
        self._event_seq = 0
        self._event_lock = threading.Lock()
        self._event_ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task | None = None
        #: Plugins whose UI schema was refused at start, with the mistakes found.
        self.ui_schema_errors: dict[str, UISchemaError] = {}
        config = config or {}
        for cls in plugin_classes:
            plugin = cls(self, config.get(cls.name, {}))
            self.plugins[plugin.name] = plugin

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event_ready = asyncio.Event()
        if self.events:
            self._event_ready.set()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, plugin in list(self.plugins.items()):
            try:
                await plugin.start()
            except Exception:
                log.exception("plugin %s failed to start; it is disabled", name)
                del self.plugins[name]
                continue
            self._check_ui_schema(plugin)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="session-sweeper")

    def _check_ui_schema(self, plugin: Plugin) -> None:
        """A plugin whose UI schema the portal cannot draw keeps its routes; its schema is
        replaced by the reason, which the portal shows instead of the page (as for a schema
        the bridge refuses), and the agent's log says what to fix, with paths."""
        if plugin.ui_schema is None:
            return
        try:
            ui_schema_parse(plugin.ui_schema, plugin=plugin.name)
        except UISchemaError as exc:
            log.error("%s", exc)
            self.ui_schema_errors[plugin.name] = exc
            plugin.ui_schema = {"refused": f"refused by the agent: {exc}"}

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        for plugin in self.plugins.values():
            try:
                await plugin.stop()
            except Exception:
                log.exception("plugin %s failed to stop cleanly", plugin.name)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            for plugin in self.plugins.values():
                try:
                    expired = await plugin.sweep_sessions()
                    if expired:
                        log.info("expired %d idle session(s) of %s", expired, plugin.name)
                except Exception:
                    log.exception("session sweep of %s failed", plugin.name)

    # -- requests ------------------------------------------------------------------------

    async def dispatch(self, plugin_name: str, request: Request) -> Response:
        plugin = self.plugins.get(plugin_name)
        if plugin is None:
            return HTTPError(404, "unknown_plugin", f"this edge has no plugin '{plugin_name}'").to_response()
        return await plugin.handle(request)

    def manifest(self) -> list[dict[str, Any]]:
        return [p.manifest() for p in self.plugins.values()]

    # -- events --------------------------------------------------------------------------

    def emit(self, plugin: str, topic: str, data: Any, *, owner: Caller | None = None) -> None:
        """Queue an event for the bridge. Thread-safe; never blocks."""
        with self._event_lock:
            self._event_seq += 1
            event = {
                "type": "event",
                "plugin": plugin,
                "topic": topic,
                "data": data,
                "owner": owner.uid if owner else None,
                "seq": self._event_seq,
                "ts": time.time(),
            }
            self.events.append(event)
            if len(self.events) > MAX_PENDING_EVENTS:
                self.events.popleft()
                self.events_dropped += 1
                if self.events_dropped in (1, 100, 10_000) or self.events_dropped % 100_000 == 0:
                    log.warning("event backlog full; %d oldest event(s) dropped", self.events_dropped)
        loop = self._loop
        if loop is None or self._event_ready is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._event_ready.set()
        else:
            try:
                loop.call_soon_threadsafe(self._event_ready.set)
            except RuntimeError:  # loop closed during shutdown
                pass

    async def wait_events(self) -> None:
        """Wait until at least one event is queued."""
        assert self._event_ready is not None, "host not started"
        while not self.events:
            self._event_ready.clear()
            if self.events:
                break
            await self._event_ready.wait()

    def take_events(self, limit: int = 500) -> list[dict[str, Any]]:
        with self._event_lock:
            n = min(limit, len(self.events))
            return [self.events.popleft() for _ in range(n)]

    def requeue_events(self, events: list[dict[str, Any]]) -> None:
        """Put back events that could not be sent, in their original order."""
        with self._event_lock:
            self.events.extendleft(reversed(events))


def default_state_dir() -> Path:
    env = os.environ.get("RADICAL_EDGE_STATE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".radical" / "edge"


def host_facts() -> dict[str, Any]:
    """Facts about this node announced in ``hello``."""
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pid": os.getpid(),
        "user": user,
        "uid": str(os.getuid()),
        "agent_version": __version__,
        **batch_job_facts(),
    }


def batch_job_facts() -> dict[str, Any]:
    """``{"batch_job": {"scheduler", "job_id"}}`` when this agent runs inside a batch job."""
    for scheduler, var in (("slurm", "SLURM_JOB_ID"), ("pbs", "PBS_JOBID"), ("lsf", "LSB_JOBID")):
        job_id = os.environ.get(var)
        if job_id:
            nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("PBS_NODEFILE") or ""
            return {"batch_job": {"scheduler": scheduler, "job_id": job_id, "nodes": nodes}}
    return {}
