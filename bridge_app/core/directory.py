"""In-process caches of what the proxy's hot path needs: who a token belongs to, and
where an edge is and who may use it.

The proxy must not query the database per request (each async ORM query is a thread hop).
Entries live for ``CACHE_TTL`` seconds and are dropped at once when any process
broadcasts an invalidation (see ``broadcast.py``). Concurrent misses of one key share a
single load. Tokens seen in use are collected here and written back in batches.

Edges are also loaded ahead of their first call: every process that learns of a change to
an edge (its registration or departure, by the invalidation every process receives)
reloads it in the background, batched with the others that changed meanwhile (one thread
hop and three queries per 256 edges), and an entry used in the last quarter of its life
is reloaded the same way. So the first call to an edge that just connected, and the calls
to an edge in steady use, find it cached; only an edge nobody called for ``CACHE_TTL``
seconds costs its caller a database read (docs/BENCHMARKS.md, "Many edges").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.utils import timezone

from edge_agent.router import Router, router_from_manifest

from ..access import policy
from ..access.tokens import API_TOKEN_PREFIX, token_digest
from ..conf import edge_settings
from ..domain.batches import chunks, padded

log = logging.getLogger(__name__)

# Bound on cached entries (also negative ones, so random tokens cannot grow memory).
MAX_ENTRIES = 20_000
# Edges loaded ahead per batch (a power of two: batches.chunks, batches.padded), and how
# long the first change waits for others to join its batch (seconds).
WARM_BATCH = 256
WARM_GATHER = 0.05


@dataclass(frozen=True)
class Principal:
    """An authenticated REST caller."""

    user_id: int
    username: str
    is_superuser: bool = False
    scope: str = "full"
    token_id: int | None = None
    group_ids: frozenset[int] = frozenset()
    expires_at: datetime | None = None

    @property
    def read_only(self) -> bool:
        return not policy.token_may_write(self.scope)


# Slots: with 10,000 edges cached (loaded ahead of their first call) every byte counts.
@dataclass(slots=True)
class PluginEntry:
    name: str
    version: str
    router: Router


@dataclass(slots=True)
class EdgeEntry:
    id: int
    name: str
    owner_id: int | None
    suspended: bool
    status: str
    channel_name: str
    last_seen: datetime | None
    plugins: dict[str, PluginEntry] = field(default_factory=dict)
    user_roles: dict[int, str] = field(default_factory=dict)
    group_roles: dict[int, str] = field(default_factory=dict)
    # A child edge whose batch job has ended ("" otherwise): why it is gone for good.
    ended: str = ""

    # time.monotonic() after which the last heartbeat is too old (set when loaded).
    stale_at: float = 0.0

    def __post_init__(self) -> None:
        if self.status == "online" and self.channel_name and self.last_seen is not None:
            age = (timezone.now() - self.last_seen).total_seconds()
            self.stale_at = time.monotonic() + 3 * edge_settings.HEARTBEAT_INTERVAL - age

    @property
    def online(self) -> bool:
        return time.monotonic() < self.stale_at

    def role_for(self, principal: Principal) -> str | None:
        """The caller's role on this edge: admin, owner, user, viewer, or None (no access),
        by the one rule of ``policy.role_for``."""
        grants: tuple[str | None, ...] = (self.user_roles.get(principal.user_id),)
        if self.group_roles:
            grants += tuple(map(self.group_roles.get, principal.group_ids))
        return policy.role_for(is_superuser=principal.is_superuser, user_id=principal.user_id,
                               owner_id=self.owner_id, grants=grants)


class _TTLCache:
    def __init__(self) -> None:
        self.entries: dict[str, tuple[float, Any]] = {}
        self.loading: dict[str, asyncio.Future] = {}

    # Called with the key of a hit in the last quarter of its life (reload it ahead).
    on_aging: Any = None

    def get(self, key: str) -> tuple[bool, Any]:
        hit = self.entries.get(key)
        if hit is None:
            return False, None
        left = hit[0] - time.monotonic()
        if left < 0:
            return False, None
        if self.on_aging is not None and left < edge_settings.CACHE_TTL / 4:
            self.on_aging(key)
        return True, hit[1]

    def put(self, key: str, value: Any) -> None:
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()
        self.entries[key] = (time.monotonic() + edge_settings.CACHE_TTL, value)

    def prune(self) -> None:
        """Forget expired entries (they are only replaced lazily otherwise)."""
        now = time.monotonic()
        for key in [k for k, (expires, _) in self.entries.items() if expires < now]:
            del self.entries[key]

    def drop(self, key: str | None) -> None:
        if key is None:
            self.entries.clear()
        else:
            self.entries.pop(key, None)

    async def get_or_load(self, key: str, loader) -> Any:
        found, value = self.get(key)
        if found:
            return value
        pending = self.loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future = asyncio.get_running_loop().create_future()
        self.loading[key] = future
        try:
            value = await loader(key)
            self.put(key, value)
            future.set_result(value)
            return value
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self.loading[key]


class Directory:
    def __init__(self) -> None:
        self._tokens = _TTLCache()
        self._edges = _TTLCache()
        self._edges.on_aging = self._warm_soon
        self.used_tokens: set[int] = set()
        # Loading edges ahead (module docstring): on while the process runtime runs.
        self.warming = False
        self._warm: set[str] = set()
        self._warm_task: asyncio.Task | None = None

    async def principal(self, token: str) -> Principal | None:
        """The caller an API token authenticates, or None (unknown, revoked, expired,
        inactive user). Never touches the database on a cache hit."""
        if not token.startswith(API_TOKEN_PREFIX) or len(token) > 200:
            return None
        principal = await self._tokens.get_or_load(token_digest(token), _load_principal)
        if principal is None:
            return None
        if principal.expires_at is not None and principal.expires_at <= timezone.now():
            return None
        if principal.token_id is not None:
            self.used_tokens.add(principal.token_id)
        return principal

    async def edge(self, name: str) -> EdgeEntry | None:
        if len(name) > 63:
            return None
        return await self._edges.get_or_load(name, _load_edge)

    def invalidate(self, kind: str, key: str | None, *, reload: bool = False) -> None:
        """Drop what ``kind``/``key`` names; with ``reload`` (the broadcast as every
        process's inbox receives it, the process that sent it included), load the dropped
        edges again ahead of their next call."""
        if kind == "token":
            self._tokens.drop(key)
            return
        if kind == "edge" and key is not None:
            self._edges.drop(key)
            if reload:
                self._warm_soon(key)
            return
        cached = list(self._edges.entries) if reload else []
        self._edges.drop(None)
        if kind != "edge":
            # Grants and group memberships changed (or everything): tokens hold access data too.
            self._tokens.drop(None)
        for name in cached:
            self._warm_soon(name)

    # -- loading edges ahead -----------------------------------------------------------

    def _warm_soon(self, name: str) -> None:
        if not self.warming or name in self._edges.loading:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a synchronous caller (a command, a test): nothing to warm
            return
        self._warm.add(name)
        task = self._warm_task
        if task is None or task.done() or task.get_loop() is not loop:
            self._warm_task = loop.create_task(self._warm_loop(), name="directory-warm")

    async def _warm_loop(self) -> None:
        try:
            await asyncio.sleep(WARM_GATHER)  # a burst of registrations makes one batch
            while self._warm and self.warming:
                names = sorted(self._warm)[:WARM_BATCH]
                self._warm.difference_update(names)
                log.debug("loading %d edge(s) ahead", len(names))
                try:
                    entries = await _load_edges(names)
                except Exception as exc:
                    # They load on demand instead (the caller sees the database's answer).
                    log.warning("could not load %d edge(s) ahead: %s", len(names), exc)
                    self._warm.clear()
                    return
                for name in names:
                    # Changed again while loading: the next batch has its newer state.
                    if name not in self._warm:
                        self._edges.put(name, entries.get(name))
        finally:
            if self._warm_task is asyncio.current_task():
                self._warm_task = None

    def prune(self) -> None:
        self._tokens.prune()
        self._edges.prune()

    def take_used_tokens(self) -> list[int]:
        ids, self.used_tokens = list(self.used_tokens), set()
        return ids


@database_sync_to_async
def _load_principal(digest: str) -> Principal | None:
    from ..models import ApiToken

    token = (
        ApiToken.objects.active().select_related("user").filter(digest=digest, user__is_active=True).first()
    )
    if token is None:
        return None
    user = token.user
    return Principal(
        user_id=user.pk,
        username=user.get_username(),
        is_superuser=user.is_superuser,
        scope=token.scope,
        token_id=token.pk,
        group_ids=frozenset(user.groups.values_list("pk", flat=True)),
        expires_at=token.expires_at,
    )


@database_sync_to_async
def _load_edge(name: str) -> EdgeEntry | None:
    return _load_edges_sync([name])[name]


_routers: dict[str, Router] = {}


def _shared_router(routes_json: str | None) -> Router:
    """Routers are immutable once built, and edges of one site mostly run the same plugin
    versions: share one router per distinct route list instead of one per edge. Keyed by
    the routes as the database holds them (JSON text): loading a thousand edges then decodes
    each distinct list once, not once per edge."""
    key = routes_json or "[]"
    router = _routers.get(key)
    if router is None:
        if len(_routers) >= 1000:
            _routers.clear()
        routes = json.loads(key)
        router = _routers[key] = router_from_manifest(routes if isinstance(routes, list) else [])
    return router


def _load_edges_sync(names: list[str]) -> dict[str, EdgeEntry | None]:
    """What ``_load_edge`` makes of each name, for many names in three queries per
    WARM_BATCH (IN lists padded to powers of two: batches.padded); None for names that
    are no edge. Not thread-sensitive: it must not queue behind the registrations.

    Rows are read as values, not model instances, and a plugin's routes as the JSON text
    the database holds (``_shared_router``): a restart's thousands of edges are loaded
    several times faster."""
    from django.db.models import TextField
    from django.db.models.functions import Cast

    from ..models import Edge, EdgeGrant, PluginRegistration, edge_ended

    out: dict[str, EdgeEntry | None] = dict.fromkeys(names)
    for chunk in chunks(names, WARM_BATCH):
        edges = list(Edge.objects.filter(name__in=padded(chunk)).values_list(
            "pk", "name", "owner_id", "suspended", "status", "channel_name", "last_seen", "parent_id"))
        if not edges:
            continue
        ids = padded([edge[0] for edge in edges])
        children = padded([edge[0] for edge in edges if edge[7] is not None])
        jobs = dict(Edge.objects.filter(pk__in=children).values_list("pk", "job")) if children else {}
        plugins: dict[int, list[tuple[Any, ...]]] = {}
        for plugin in (PluginRegistration.objects.filter(edge_id__in=ids)
                       .annotate(routes_text=Cast("routes", output_field=TextField()))
                       .values_list("edge_id", "name", "version", "routes_text")):
            plugins.setdefault(plugin[0], []).append(plugin)
        user_roles: dict[int, dict[int, str]] = {}
        group_roles: dict[int, dict[int, str]] = {}
        for edge_id, user_id, group_id, role in EdgeGrant.objects.filter(edge_id__in=ids).values_list(
                "edge_id", "user_id", "group_id", "role"):
            if user_id:
                user_roles.setdefault(edge_id, {})[user_id] = role
            elif group_id:
                group_roles.setdefault(edge_id, {})[group_id] = role
        for pk, name, owner_id, suspended, status, channel_name, last_seen, parent_id in edges:
            job = jobs.get(pk)
            out[name] = EdgeEntry(
                id=pk, name=name, owner_id=owner_id, suspended=suspended, status=status,
                channel_name=channel_name, last_seen=last_seen,
                ended=_ended(name, job or {}) if edge_ended(parent_id, job) else "",
                plugins={p[1]: PluginEntry(p[1], p[2], _shared_router(p[3])) for p in plugins.get(pk, ())},
                user_roles=user_roles.get(pk, {}), group_roles=group_roles.get(pk, {}),
            )
    return out


_load_edges = database_sync_to_async(_load_edges_sync, thread_sensitive=False)


def _ended(name: str, job: dict[str, Any]) -> str:
    """Why a child edge whose batch job has ended is gone for good."""
    return str(job.get("detail") or f"edge '{name}' ended with its allocation "
               f"(job {job.get('native_id') or job.get('job_id')}, {job.get('state')})")


directory = Directory()
