"""The plugin framework: routes, requests, responses, sessions and events.

A plugin is a class with a ``name``, a ``version`` and methods decorated with
:func:`route`. Every plugin also gets the built-in routes (``register_session``,
``unregister_session/{sid}``, ``version``, ``list_sessions``, ``health``, ``ui_config``, ``echo/{sid}``).

Handlers may be ``async def`` (run on the agent's event loop; must not block) or plain
``def`` (run in a worker thread, so blocking calls such as psutil or subprocess are fine).
A handler returns a :class:`Response`, or any JSON-serializable value (sent as 200 JSON),
and signals failures by raising :class:`HTTPError`.

Sessions belong to the caller that created them: another caller gets 404 for them, as if
they did not exist, unless it is the edge's owner (or a site admin), who sees everything
on the edge. Every plugin caps its sessions per user and in all (agent options
``PLUGIN.max_sessions_per_user`` and ``PLUGIN.max_sessions``), and a plugin whose sessions
start processes or hold other resources says so (``viewers_may_open_sessions = False``):
opening one then needs the user role.

The bridge enforces read-only routes before a call reaches the agent; the agent checks
again (a viewer or a read-only token calling any other route gets 403 here too).
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, overload
from urllib.parse import parse_qs

from .router import MethodNotAllowed, Route, RouteNotFound, Router

if TYPE_CHECKING:
    from .host import PluginHost

try:  # several times faster than json for answers (see protocol.py); optional
    import orjson
except ImportError:  # pragma: no cover - exercised on agents without orjson
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("edge_agent.plugin")

JSON_TYPE = "application/json"

#: Options every plugin takes (``--option PLUGIN.NAME=VALUE``), read by the framework and
#: not passed on to the plugin's own settings.
SESSION_OPTIONS = ("max_sessions_per_user", "max_sessions")


class HTTPError(Exception):
    """An error answer: ``{"error": error, "detail": detail}`` with an HTTP status."""

    def __init__(self, status: int, error: str, detail: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or error)
        self.status = status
        self.error = error
        self.detail = detail or error
        self.headers = headers or {}

    def to_response(self) -> Response:
        return Response.json({"error": self.error, "detail": self.detail}, status=self.status, headers=self.headers)


@dataclass(frozen=True)
class Caller:
    """Who is calling, as authenticated by the bridge (agents trust only the bridge).

    ``role`` is one of ``owner``, ``admin``, ``user``, ``viewer``; ``uid`` is the bridge's
    user id (None only for calls the agent makes to itself).
    """

    user: str = ""
    uid: int | None = None
    role: str = "user"
    scope: str = "full"

    @property
    def sees_everything(self) -> bool:
        """Edge owners and site admins see every session, job and task on the edge."""
        return self.role in ("owner", "admin")

    @property
    def read_only(self) -> bool:
        """A viewer, or anyone calling with a read-only API token: read-only routes only."""
        return self.role == "viewer" or self.scope == "read"

    @property
    def key(self) -> str:
        """Who this is, for counting sessions: the bridge's user id (the name for the
        agent's own calls, which have none)."""
        return f"uid:{self.uid}" if self.uid is not None else f"user:{self.user}"

    @classmethod
    def from_frame(cls, data: Any) -> Caller:
        if not isinstance(data, dict):
            return cls(user="", uid=None, role="viewer", scope="read")
        uid = data.get("uid")
        return cls(
            user=str(data.get("user", "")),
            uid=uid if isinstance(uid, int) and not isinstance(uid, bool) else None,
            role=str(data.get("role", "viewer")),
            scope=str(data.get("scope", "read")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "uid": self.uid, "role": self.role, "scope": self.scope}


@dataclass
class Request:
    """One call to a plugin route, as carried by a ``request`` frame."""

    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    caller: Caller = field(default_factory=Caller)
    req_id: str = ""
    params: dict[str, str] = field(default_factory=dict)
    _query_params: dict[str, list[str]] | None = field(default=None, repr=False)

    @property
    def query_params(self) -> dict[str, list[str]]:
        if self._query_params is None:
            self._query_params = parse_qs(self.query, keep_blank_values=True)
        return self._query_params

    @overload
    def arg(self, name: str) -> str | None: ...
    @overload
    def arg(self, name: str, default: str) -> str: ...
    @overload
    def arg(self, name: str, default: str | None) -> str | None: ...

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The last value of query parameter ``name``."""
        values = self.query_params.get(name)
        return values[-1] if values else default

    @property
    def original_format(self) -> bool:
        """True when the caller asked for the original RADICAL Edge's answer shapes
        (``?format=v0``, or the ``X-Radical-Edge-Format: v0`` header the bridge sets for
        the original SDK's requests); see docs/MIGRATING.md."""
        return self.arg("format") == "v0" or self.headers.get("x-radical-edge-format", "").lower() == "v0"

    def flag(self, name: str) -> bool:
        """A boolean query parameter: ``?force=true`` / ``1`` / ``yes``."""
        value = self.arg(name)
        return value is not None and value.lower() in ("1", "true", "yes", "on", "")

    def json(self, *, default: Any = None) -> Any:
        """The body parsed as JSON; ``default`` when empty. Bad JSON is a 400."""
        if not self.body.strip():
            return default
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HTTPError(400, "bad_json", f"request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise HTTPError(400, "bad_json", "request body is nested too deeply") from None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object ({} when empty); anything else is a 400."""
        data = self.json(default={})
        if not isinstance(data, dict):
            raise HTTPError(400, "bad_request", "request body must be a JSON object")
        return data


@dataclass
class Response:
    """An answer. ``body`` holds it whole; or ``stream`` yields it piece by piece (the agent
    sends it as flow-controlled chunks, so a file of any size never sits whole in memory),
    with ``length`` when known (the client then sees a truncated body if it ends early)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None
    length: int | None = None

    @classmethod
    def json(cls, data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json_bytes(data), {"content-type": JSON_TYPE, **(headers or {})})

    @classmethod
    def bytes(cls, data: bytes, *, content_type: str = "application/octet-stream", status: int = 200) -> Response:
        return cls(status, data, {"content-type": content_type})

    @classmethod
    def streamed(cls, chunks: AsyncIterator[builtins.bytes], *, length: int | None = None, status: int = 200,
                 headers: dict[str, str] | None = None) -> Response:
        """A body produced by ``chunks`` (an async iterator of bytes), ``length`` bytes if
        known. The iterator is closed (``aclose``) when the caller goes away."""
        return cls(status, b"", dict(headers or {}), stream=chunks, length=length)


def json_bytes(data: Any) -> builtins.bytes:
    """``data`` as compact JSON (UTF-8). What JSON has no type for goes through
    :func:`_json_default`; with orjson, NaN and infinities become null (stdlib json would
    write ``NaN``, which no JSON parser accepts) and dataclasses become objects."""
    if orjson is not None:
        try:
            return orjson.dumps(data, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            pass  # e.g. an int beyond 64 bits: stdlib json takes it
    return json.dumps(data, separators=(",", ":"), default=_json_default).encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    readonly: bool | None
    session: bool
    is_async: bool = True  # the handler is a coroutine function (else it runs in a thread)


def route(method: str, path: str, *, readonly: bool | None = None, session: bool | None = None) -> Callable:
    """Declare a plugin route.

    ``readonly`` tells the bridge whether a ``viewer`` may call it (default: GET is
    read-only, anything else is not). With ``session`` (default: the path has ``{sid}``),
    the handler receives the caller's session object as ``session``; an unknown or foreign
    sid is a 404, an expired one a 410.
    """

    def mark(fn: Callable) -> Callable:
        specs = getattr(fn, "_edge_routes", [])
        needs_session = "{sid}" in path if session is None else session
        specs.append(RouteSpec(method.upper(), path.strip("/"), readonly, needs_session,
                               inspect.iscoroutinefunction(fn)))
        fn._edge_routes = specs  # type: ignore[attr-defined]
        return fn

    return mark


class Session:
    """Per-caller state of a plugin. Subclasses add fields and override :meth:`close`."""

    def __init__(self, plugin: Plugin, sid: str, owner: Caller, params: dict[str, Any]) -> None:
        self.plugin = plugin
        self.sid = sid
        self.owner = owner
        self.params = params
        self.created = time.time()
        self.last_used = self.created

    async def start(self) -> None:
        """Called once after creation, with the registration body in ``self.params``."""

    async def close(self) -> None:
        """Release resources (called on unregister and expiry)."""

    def visible_to(self, caller: Caller) -> bool:
        return caller.sees_everything or (caller.uid is not None and caller.uid == self.owner.uid)

    def describe(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "owner": self.owner.user,
            "created": self.created,
            "last_used": self.last_used,
        }


class Plugin:
    """Base class of every plugin. Subclasses set ``name``/``version`` and add routes."""

    name: str = ""
    version: str = "0.0.0"
    description: str = ""
    session_class: type[Session] = Session
    session_ttl: float = 3600.0
    #: Whether a viewer may open a session: True for sessions that hold nothing but a few
    #: bytes of the agent's memory. A plugin whose sessions start processes, threads or
    #: connections sets it False, and ``register_session`` then needs the user role.
    viewers_may_open_sessions: bool = True
    #: Sessions one user may hold open on this plugin, and all users together; beyond
    #: either, ``register_session`` answers 429. Agent options of the same names override.
    max_sessions_per_user: int = 64
    max_sessions: int = 1024
    #: UI schema the portal renders for plugins it has no page for (docs/WRITING-A-PLUGIN.md;
    #: its structure is ``edge_agent.ui_schema``, checked when the agent starts).
    ui_schema: dict[str, Any] | None = None

    def __init__(self, host: PluginHost, config: dict[str, Any] | None = None) -> None:
        self.host = host
        self.config = dict(config or {})
        for option in SESSION_OPTIONS:
            if option in self.config:
                setattr(self, option, _session_limit(self.name, option, self.config.pop(option)))
        if self.max_sessions_per_user > self.max_sessions:
            self.max_sessions_per_user = self.max_sessions
        self.started = time.time()
        self.sessions: dict[str, Session] = {}
        self._expired: dict[str, float] = {}
        # Sessions being opened (their start() is running), per caller: they count already.
        self._opening: dict[str, int] = {}
        self.router = Router()
        self._build_routes()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Called once on the agent's event loop before the first connection."""

    async def stop(self) -> None:
        """Called on shutdown; the default closes every session."""
        for sid in list(self.sessions):
            await self._drop_session(sid)

    # -- routing -------------------------------------------------------------------------

    def _build_routes(self) -> None:
        seen: set[str] = set()
        for klass in type(self).__mro__:
            for attr, fn in vars(klass).items():
                if attr in seen:
                    continue
                seen.add(attr)
                specs = getattr(fn, "_edge_routes", None)
                if not specs:
                    continue
                bound = getattr(self, attr)
                for spec in specs:
                    readonly = spec.readonly
                    if fn is Plugin.__dict__["_register_session"]:
                        readonly = self.viewers_may_open_sessions
                    self.router.add(spec.method, spec.path, (bound, spec), readonly=readonly)

    def manifest(self) -> dict[str, Any]:
        """What the agent announces in ``hello`` for this plugin."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "routes": [
                {"method": r.method, "path": r.template, "readonly": r.readonly} for r in self.router.routes
            ],
            "ui_schema": self.ui_schema,
        }

    async def handle(self, request: Request) -> Response:
        """Route ``request`` to its handler and turn the outcome into a Response."""
        try:
            route, params = self.router.match(request.method, request.path)
        except RouteNotFound:
            return HTTPError(404, "not_found", f"plugin '{self.name}' has no route '{request.path}'").to_response()
        except MethodNotAllowed as exc:
            return HTTPError(
                405, "method_not_allowed", f"'{request.path}' allows {', '.join(exc.allowed)}",
                headers={"allow": ", ".join(exc.allowed)},
            ).to_response()
        request.params = params
        if not route.readonly and request.caller.read_only:
            # The bridge refuses these first; this holds even if a call gets past it.
            return HTTPError(403, "forbidden", f"'{request.path}' of plugin '{self.name}' needs the user role "
                             "and a token that is not read-only").to_response()
        try:
            result = await self._call(route, request)
        except HTTPError as exc:
            return exc.to_response()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The request id is the caller's X-Request-ID (or the bridge's): it ties this
            # line to the bridge's logs and the caller's error answer.
            log.exception("plugin %s route %s %s failed", self.name, request.method, request.path,
                          extra={"request_id": request.headers.get("x-request-id"), "user": request.caller.user})
            return HTTPError(500, "plugin_error", f"plugin '{self.name}' failed on '{request.path}'").to_response()
        if isinstance(result, Response):
            return result
        return Response.json(result)

    async def _call(self, route: Route, request: Request) -> Any:
        fn, spec = route.target
        kwargs: dict[str, Any] = dict(request.params)
        if spec.session:
            kwargs["session"] = self.get_session(kwargs.pop("sid", ""), request.caller)
        if spec.is_async:
            return await fn(request, **kwargs)
        return await asyncio.to_thread(fn, request, **kwargs)

    # -- sessions ------------------------------------------------------------------------

    def get_session(self, sid: str, caller: Caller) -> Session:
        """The caller's session ``sid``: 404 if unknown or not theirs, 410 if expired."""
        session = self.sessions.get(sid)
        if session is None or not session.visible_to(caller):
            if sid in self._expired and session is None:
                raise HTTPError(410, "session_expired", f"session '{sid}' expired")
            raise HTTPError(404, "unknown_session", f"no session '{sid}' on plugin '{self.name}'")
        now = time.time()
        if now - session.last_used > self.session_ttl:
            raise HTTPError(410, "session_expired", f"session '{sid}' expired")
        session.last_used = now
        return session

    async def create_session(self, caller: Caller, params: dict[str, Any]) -> Session:
        """Open a session for ``caller``: 429 ``too_many_sessions`` beyond the caps."""
        if self._session_limit_hit(caller):
            await self.sweep_sessions()  # idle ones past their TTL do not count
        self._check_session_limits(caller)
        key = caller.key
        # Reserved before start() (which may take seconds): concurrent opens cannot overshoot.
        self._opening[key] = self._opening.get(key, 0) + 1
        try:
            sid = secrets.token_urlsafe(24)  # 192 bits
            session = self.session_class(self, sid, caller, params)
            await session.start()
            self.sessions[sid] = session
        finally:
            self._opening[key] -= 1
            if not self._opening[key]:
                del self._opening[key]
        return session

    def _session_counts(self, caller: Caller) -> tuple[int, int]:
        key = caller.key
        mine = sum(1 for s in self.sessions.values() if s.owner.key == key) + self._opening.get(key, 0)
        return mine, len(self.sessions) + sum(self._opening.values())

    def _session_limit_hit(self, caller: Caller) -> bool:
        mine, total = self._session_counts(caller)
        return mine >= self.max_sessions_per_user or total >= self.max_sessions

    def _check_session_limits(self, caller: Caller) -> None:
        mine, total = self._session_counts(caller)
        if mine >= self.max_sessions_per_user:
            raise HTTPError(429, "too_many_sessions", f"you have {mine} open session(s) on plugin '{self.name}', "
                            f"the limit per user on this edge (agent option {self.name}.max_sessions_per_user="
                            f"{self.max_sessions_per_user}); close one (POST unregister_session/{{sid}}; "
                            f"GET list_sessions lists them) or let an idle one expire "
                            f"(after {self.session_ttl:g} s)")
        if total >= self.max_sessions:
            raise HTTPError(429, "too_many_sessions", f"plugin '{self.name}' has {total} open session(s), its "
                            f"limit on this edge (agent option {self.name}.max_sessions={self.max_sessions}); "
                            "try again when some are closed or expire")

    async def _drop_session(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        try:
            await session.close()
        except Exception:
            log.exception("closing session %s of %s failed", sid, self.name)

    async def sweep_sessions(self, now: float | None = None) -> int:
        """Close sessions idle for longer than the TTL; returns how many were closed."""
        now = time.time() if now is None else now
        stale = [sid for sid, s in self.sessions.items() if now - s.last_used > self.session_ttl]
        for sid in stale:
            await self._drop_session(sid)
            self._expired[sid] = now
        # Remember expired ids for a while so they answer 410, not 404.
        horizon = now - 24 * 3600
        for sid in [s for s, t in self._expired.items() if t < horizon]:
            del self._expired[sid]
        return len(stale)

    # -- events --------------------------------------------------------------------------

    def emit(self, topic: str, data: Any, *, owner: Caller | None = None) -> None:
        """Send an event to the bridge. Safe to call from any thread; never drops events
        while the agent runs (they wait in a queue while the bridge is unreachable)."""
        self.host.emit(self.name, topic, data, owner=owner)

    # -- built-in routes -----------------------------------------------------------------

    # Read-only (viewers may call it) as the plugin's viewers_may_open_sessions says.
    @route("POST", "register_session", session=False)
    async def _register_session(self, request: Request) -> dict[str, Any]:
        session = await self.create_session(request.caller, request.json_object())
        return {"sid": session.sid}

    @route("POST", "unregister_session/{sid}", readonly=True, session=False)
    async def _unregister_session(self, request: Request, sid: str) -> dict[str, Any]:
        self.get_session(sid, request.caller)
        await self._drop_session(sid)
        return {"ok": True}

    @route("GET", "version")
    async def _version(self, request: Request) -> dict[str, Any]:
        return {"plugin": self.name, "version": self.version}

    @route("GET", "list_sessions")
    async def _list_sessions(self, request: Request) -> Any:
        """``{"sessions": [{sid, owner, created, last_used}]}``: the caller's own sessions
        (all of them for the edge's owner and site admins); the original's list of sids
        with ``?format=v0``."""
        mine = [s for s in self.sessions.values() if s.visible_to(request.caller)]
        if request.original_format:
            return [s.sid for s in mine]
        return {"sessions": [s.describe() for s in mine]}

    @route("GET", "echo/{sid}")
    async def _echo_builtin(self, request: Request, session: Session) -> dict[str, Any]:
        """The original's connectivity check: ``{"sid", "echo": q}`` (``q`` defaults to "hello")."""
        return {"sid": session.sid, "echo": request.arg("q", "hello")}

    @route("GET", "health")
    async def _health(self, request: Request) -> dict[str, Any]:
        """``status`` is ``ok`` (the original's ``healthy`` with ``?format=v0``); plugins may
        say ``degraded``."""
        return {
            "status": "healthy" if request.original_format else "ok",
            "plugin": self.name,
            "version": self.version,
            "uptime_seconds": round(time.time() - self.started, 3),
            "active_sessions": len(self.sessions),
        }

    @route("GET", "ui_config")
    async def _ui_config(self, request: Request) -> dict[str, Any]:
        """The UI schema; with ``?format=v0`` wrapped as the original answered it:
        ``{"plugin_name", "instance_name", "version", "ui"}``."""
        ui = self.ui_schema or {"title": self.name, "description": self.description}
        if request.original_format:
            return {"plugin_name": self.name, "instance_name": self.name, "version": self.version, "ui": ui}
        return ui


def _session_limit(plugin: str, option: str, value: Any) -> int:
    """A session cap from the agent's options: a whole number of at least 1."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{plugin}.{option} must be a whole number of at least 1, got {value!r}")
    return value
