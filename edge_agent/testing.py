"""A test client for plugins: a started plugin host, called as the bridge calls it.

::

    from edge_agent.testing import PluginTestClient

    async def test_purge(tmp_path):
        async with PluginTestClient(ScratchPlugin, state_dir=tmp_path, config={"root": "/scratch"}) as client:
            assert await client.call("POST", "purge/{sid}", json={"older_than_days": 30}) == {"purged": 0}
            reply = await client.request("GET", "usage/{sid}", caller=client.viewer)
            assert reply.status == 200

No bridge and no network: requests go through :class:`~edge_agent.host.PluginHost` exactly
as the agent dispatches ``request`` frames, so routing, sessions, roles, worker threads,
streaming and events behave as in production. ``{sid}`` in a path is a session of the
calling user, opened on first use. Starting the client checks every plugin's UI schema
(:mod:`edge_agent.ui_schema`) and raises :class:`~edge_agent.ui_schema.UISchemaError` with
the paths of its mistakes, where a running agent would only log them.
"""

from __future__ import annotations

import json as jsonlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .host import PluginHost
from .plugin import Caller, Plugin, Request

__all__ = ["CallFailed", "PluginTestClient", "Reply"]


@dataclass
class Reply:
    """A plugin's answer, with a streamed body read whole."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: Whether the plugin answered with a stream (``Response.streamed``), as downloads do.
    streamed: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return jsonlib.loads(self.body) if self.body else None


class CallFailed(AssertionError):
    """:meth:`PluginTestClient.call` got an error answer; ``reply`` holds it."""

    def __init__(self, method: str, path: str, reply: Reply) -> None:
        super().__init__(f"{method} {path} answered {reply.status}: {reply.body[:500]!r}")
        self.reply = reply
        self.status = reply.status
        try:
            data = reply.json()
        except ValueError:
            data = None
        self.error = data.get("error") if isinstance(data, dict) else None


class PluginTestClient:
    """A :class:`PluginHost` with ``plugin_classes``, started on entering (``async with``)
    and stopped on leaving.

    ``config`` is the first plugin's options (``--option NAME.key=value``); pass
    ``configs={name: {...}}`` for several plugins. ``caller`` is who calls by default (a
    user with a full-scope token); :attr:`owner`, :attr:`viewer` and :meth:`user` make others.
    """

    def __init__(self, *plugin_classes: type[Plugin], state_dir: Path | str, config: dict[str, Any] | None = None,
                 configs: dict[str, dict[str, Any]] | None = None, caller: Caller | None = None,
                 sweep_interval: float = 3600.0) -> None:
        if not plugin_classes:
            raise TypeError("PluginTestClient needs at least one plugin class")
        configs = dict(configs or {})
        if config is not None:
            configs[plugin_classes[0].name] = config
        self.host = PluginHost(list(plugin_classes), state_dir=Path(state_dir), config=configs,
                               sweep_interval=sweep_interval)
        self.default_plugin = plugin_classes[0].name
        self.caller = caller or self.user("alice", uid=1)
        self.owner = Caller(user="owner", uid=1000, role="owner", scope="full")
        self.viewer = Caller(user="viewer", uid=1001, role="viewer", scope="full")
        self._sessions: dict[tuple[str, str], str] = {}
        self._started = False

    @staticmethod
    def user(name: str, *, uid: int, role: str = "user", scope: str = "full") -> Caller:
        """A caller as the bridge describes one (``role`` owner/admin/user/viewer)."""
        return Caller(user=name, uid=uid, role=role, scope=scope)

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> PluginTestClient:
        """Start the host (every plugin's ``start()``), then check the UI schemas."""
        await self.host.start()
        self._started = True
        for error in self.host.ui_schema_errors.values():
            raise error
        return self

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.host.stop()

    async def __aenter__(self) -> PluginTestClient:
        try:
            return await self.start()
        except BaseException:
            await self.stop()
            raise

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    @property
    def plugin(self) -> Plugin:
        """The (first) plugin instance, for assertions on its state."""
        return self.host.plugins[self.default_plugin]

    @property
    def plugins(self) -> dict[str, Plugin]:
        return self.host.plugins

    @property
    def state_dir(self) -> Path:
        return self.host.state_dir

    # -- calls -------------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, json: Any = None, body: bytes = b"",
                      query: str | dict[str, Any] = "", headers: dict[str, str] | None = None,
                      caller: Caller | None = None, plugin: str | None = None) -> Reply:
        """Call a route and return its answer, whatever the status. ``json`` is sent as
        the body; ``query`` may be a string or a dict; ``{sid}`` in ``path`` is filled in."""
        caller = caller or self.caller
        plugin = plugin or self.default_plugin
        if "{sid}" in path:
            path = path.replace("{sid}", await self.session(caller=caller, plugin=plugin))
        if json is not None:
            body = jsonlib.dumps(json).encode()
        if isinstance(query, dict):
            query = urlencode(query, doseq=True)
        response = await self.host.dispatch(plugin, Request(method=method.upper(), path=path, query=query,
                                                            headers=dict(headers or {}), body=body, caller=caller))
        data = response.body
        if response.stream is not None:
            data = b"".join([piece async for piece in response.stream])
        return Reply(response.status, data, dict(response.headers), streamed=response.stream is not None)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request`, then the answer parsed as JSON; raises :class:`CallFailed` for
        an answer that is not 2xx."""
        reply = await self.request(method, path, **kwargs)
        if not reply.ok:
            raise CallFailed(method, path, reply)
        return reply.json() if reply.headers.get("content-type", "").startswith("application/json") else reply.body

    async def session(self, *, caller: Caller | None = None, plugin: str | None = None, new: bool = False) -> str:
        """The session id of ``caller`` on ``plugin``, opened on first use (or ``new``)."""
        caller = caller or self.caller
        plugin = plugin or self.default_plugin
        key = (plugin, caller.key)
        if new or key not in self._sessions:
            reply = await self.request("POST", "register_session", caller=caller, plugin=plugin)
            if not reply.ok:
                raise CallFailed("POST", "register_session", reply)
            self._sessions[key] = reply.json()["sid"]
        return self._sessions[key]

    # -- events ------------------------------------------------------------------------------

    def events(self, topic: str | None = None, *, plugin: str | None = None) -> list[dict[str, Any]]:
        """The events emitted so far that the agent would send (``topic``/``plugin`` filter
        them); they stay queued, so later calls see them again."""
        return [e for e in list(self.host.events)
                if (topic is None or e["topic"] == topic) and (plugin is None or e["plugin"] == plugin)]
