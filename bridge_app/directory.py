"""In-process caches of what the proxy's hot path needs: who a token belongs to, and
where an edge is and who may use it.

The proxy must not query the database per request (each async ORM query is a thread hop).
Entries live for ``CACHE_TTL`` seconds and are dropped at once when any process
broadcasts an invalidation (see ``broadcast.py``). Concurrent misses of one key share a
single load. Tokens seen in use are collected here and written back in batches.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.utils import timezone

from edge_agent.router import Router, router_from_manifest

from . import policy
from .conf import edge_settings
from .tokens import API_TOKEN_PREFIX, token_digest

# Bound on cached entries (also negative ones, so random tokens cannot grow memory).
MAX_ENTRIES = 20_000


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


@dataclass
class PluginEntry:
    name: str
    version: str
    router: Router


@dataclass
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

    def get(self, key: str) -> tuple[bool, Any]:
        hit = self.entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return False, None
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
        self.used_tokens: set[int] = set()

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

    def invalidate(self, kind: str, key: str | None) -> None:
        if kind == "token":
            self._tokens.drop(key)
        elif kind == "edge":
            self._edges.drop(key)
        elif kind == "access":
            # Grants and group memberships changed: both caches hold access data.
            self._edges.drop(None)
            self._tokens.drop(None)
        else:
            self._edges.drop(None)
            self._tokens.drop(None)

    def prune(self) -> None:
        self._tokens.prune()
        self._edges.prune()

    def take_used_tokens(self) -> list[int]:
        ids, self.used_tokens = list(self.used_tokens), set()
        return ids


@database_sync_to_async
def _load_principal(digest: str) -> Principal | None:
    from .models import ApiToken

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
    from .models import Edge

    edge = Edge.objects.filter(name=name).prefetch_related("plugins").first()
    if edge is None:
        return None
    entry = EdgeEntry(
        id=edge.pk, name=edge.name, owner_id=edge.owner_id, suspended=edge.suspended, status=edge.status,
        channel_name=edge.channel_name, last_seen=edge.last_seen,
        ended=(str(edge.job.get("detail") or f"edge '{edge.name}' ended with its allocation "
                   f"(job {edge.job.get('native_id') or edge.job.get('job_id')}, {edge.job.get('state')})")
               if edge.ended else ""),
        plugins={p.name: PluginEntry(p.name, p.version, _shared_router(p.routes or []))
                 for p in edge.plugins.all()},
    )
    _load_grants(edge, entry)
    return entry


_routers: dict[str, Router] = {}


def _shared_router(routes: list[Any]) -> Router:
    """Routers are immutable once built, and edges of one site mostly run the same plugin
    versions: share one router per distinct route list instead of one per edge."""
    key = json.dumps(routes, sort_keys=True, default=str)
    router = _routers.get(key)
    if router is None:
        if len(_routers) >= 1000:
            _routers.clear()
        router = _routers[key] = router_from_manifest(routes)
    return router


def _load_grants(edge: Any, entry: EdgeEntry) -> None:
    """Fill the edge's grants (a hook that access control extends)."""
    grants = getattr(edge, "grants", None)
    if grants is None:
        return
    for grant in grants.all():
        if getattr(grant, "user_id", None):
            entry.user_roles[grant.user_id] = grant.role
        elif getattr(grant, "group_id", None):
            entry.group_roles[grant.group_id] = grant.role


directory = Directory()
