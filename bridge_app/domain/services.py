"""Writes: every change of bridge state goes through a function here.

Functions are named ``<entity>_<action>`` and take keyword-only arguments. Each change
that other processes cache is followed by an invalidation broadcast (``broadcast.py``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from datetime import timezone as dt_timezone
from typing import Any, Callable, TypeVar, cast

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from edge_agent import protocol

from .. import messages
from ..access.tokens import API_TOKEN_PREFIX, EDGE_TOKEN_PREFIX, token_digest, token_generate
from ..conf import edge_settings
from ..core import broadcast
from ..models import (
    ActionRecord,
    ApiToken,
    CallRecord,
    Edge,
    EdgeGrant,
    EdgeToken,
    PluginRegistration,
    validate_edge_name,
)
from .batches import chunks, padded

log = logging.getLogger(__name__)
User = get_user_model()


# --- tokens -------------------------------------------------------------------------------


def edge_token_create(*, name: str, owner: Any = None, created_by: Any = None, note: str = "",
                      expires_in_days: int | None = None) -> tuple[EdgeToken, str]:
    """Issue a token for edge ``name`` (the edge is created if new). Returns the token row
    and the plaintext, which is shown once and never stored.

    An existing edge keeps its owner unless it has none and ``owner`` is given; giving a
    different owner for an owned edge is refused, so a token cannot hand an edge over.
    """
    validate_edge_name(name)
    with transaction.atomic():
        edge, created = Edge.objects.select_for_update().get_or_create(name=name, defaults={"owner": owner})
        if not created and owner is not None and edge.owner_id not in (None, owner.pk):
            raise ValidationError(f"edge '{name}' already belongs to {edge.owner}; ask them or an admin")
        if not created and owner is not None and edge.owner_id is None:
            edge.owner = owner
            edge.save(update_fields=["owner"])
        plaintext, prefix, digest = token_generate(EDGE_TOKEN_PREFIX)
        expires = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        token = EdgeToken.objects.create(edge=edge, prefix=prefix, digest=digest, note=note,
                                         created_by=created_by, expires_at=expires)
        action_record(actor=created_by, action=ActionRecord.Action.EDGE_TOKEN_ISSUED, edge=name,
                      target=f"{prefix}…", detail={"owner": str(edge.owner or ""), "note": note,
                                                   "expires_at": expires.isoformat() if expires else None})
    broadcast.broadcast(broadcast.invalidation("edge", name))
    return token, plaintext


def edge_add_for_user(*, user: Any, name: str, description: str = "") -> tuple[EdgeToken, str]:
    """A user adds an edge of their own in the portal: a new edge (never an existing one,
    owned or not) with its first token, within ``USER_EDGES_MAX`` for non-admins."""
    from .selectors import edge_add_allowed

    validate_edge_name(name)
    if not edge_add_allowed(user=user):
        raise ValidationError(f"you may own at most {edge_settings.USER_EDGES_MAX} edges; ask a site admin for more")
    with transaction.atomic():
        if Edge.objects.filter(name=name).exists():
            raise ValidationError(f"the name '{name}' is taken; choose another")
        Edge.objects.create(name=name, owner=user, description=description)
        return edge_token_create(name=name, owner=user, created_by=user, note="added in the portal")


def edge_token_revoke(*, token: EdgeToken, disconnect: bool = True, actor: Any = None) -> None:
    """Revoke an edge token; an agent connected with it is told ``bye`` and dropped.
    ``actor`` (None: the command line) is recorded in the admin audit trail."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        action_record(actor=actor, action=ActionRecord.Action.EDGE_TOKEN_REVOKED, edge=token.edge.name,
                      target=f"{token.prefix}…")
    if disconnect:
        edge = token.edge
        if edge.channel_name and edge.status == Edge.Status.ONLINE:
            _edge_send_sync(edge.channel_name, messages.edge_kick(
                protocol.BYE_REVOKED, "this edge's token was revoked", retry=False, token_id=token.pk))


# Without django-stubs mypy sees a TextChoices member as the tuple it is declared with.
def api_token_create(*, user: Any, name: str = "", scope: str = ApiToken.Scope.FULL,  # type: ignore[assignment]
                     expires_in_days: int | None = None, actor: Any = None) -> tuple[ApiToken, str]:
    """Issue a personal API token; returns the row and the plaintext (shown once).
    ``actor`` is who issued it (the user themself in the portal, an admin, or None for the
    command line)."""
    if scope not in ApiToken.Scope.values:
        raise ValidationError(f"scope must be one of {', '.join(ApiToken.Scope.values)}")
    if expires_in_days is not None and expires_in_days <= 0:
        raise ValidationError("expiry must be a positive number of days")
    plaintext, prefix, digest = token_generate(API_TOKEN_PREFIX)
    expires = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    token = ApiToken.objects.create(user=user, name=name, scope=scope, prefix=prefix, digest=digest,
                                    expires_at=expires)
    action_record(actor=actor, action=ActionRecord.Action.API_TOKEN_ISSUED, target=f"{prefix}…",
                  detail={"user": user.get_username(), "scope": scope, "name": name,
                          "expires_at": expires.isoformat() if expires else None})
    return token, plaintext


def api_token_revoke(*, token: ApiToken, actor: Any = None) -> None:
    """Revoke an API token; every bridge process forgets it at once (broadcast)."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        action_record(actor=actor, action=ActionRecord.Action.API_TOKEN_REVOKED, target=f"{token.prefix}…",
                      detail={"user": token.user.get_username()})
    broadcast.broadcast(broadcast.invalidation("token", token.digest))


def tokens_touch(*, model: type[Any], ids: list[int]) -> None:
    """Record that tokens were used (called in batches, off the request path)."""
    if ids:
        model.objects.filter(pk__in=padded(ids)).update(last_used_at=timezone.now())


T = TypeVar("T")
R = TypeVar("R")

# --- statement shapes: ``padded`` and ``chunks`` live in batches.py (imported above) -------


# --- text and batches the database always takes -------------------------------------------

# A write that failed with one of these may succeed later (database restarting, locked,
# connection lost): its rows wait. Any other failure is in the rows themselves.
RETRYABLE_DB_ERRORS = (OperationalError, InterfaceError)


def storable_text(value: str, limit: int | None = None) -> str:
    """``value`` (cut to ``limit`` characters) as text every database stores: PostgreSQL
    refuses NUL in text and JSON, and lone surrogates are not UTF-8; each becomes U+FFFD.
    Costs two scans of an ASCII string without NUL, which is nearly every string."""
    if limit is not None:
        value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def rows_write_isolated(*, write: Callable[[Sequence[T]], R], rows: Sequence[T],
                        repair: Callable[[T], T], what: str) -> tuple[list[R], int]:
    """``write(rows)`` so that no row can hold up the others: if the batch fails for a
    reason in its rows (not one in ``RETRYABLE_DB_ERRORS``, which propagate: the caller
    keeps the rows for later), each row is written alone, a row that still fails once
    more as ``repair(row)``, and a row that fails then too is dropped and logged.
    Returns the results of the writes that succeeded and how many rows were dropped."""
    try:
        return [write(rows)], 0
    except RETRYABLE_DB_ERRORS:
        raise
    except Exception as exc:
        log.warning("a batch of %d %s could not be written (%s); writing them one by one", len(rows), what, exc)
    results: list[R] = []
    dropped = 0
    for row in rows:
        for attempt in (row, None):
            try:
                results.append(write([attempt if attempt is not None else repair(row)]))
                break
            except RETRYABLE_DB_ERRORS:
                raise
            except Exception as exc:
                if attempt is None:
                    dropped += 1
                    log.error("dropped one of the %s, which the database refuses: %s (%.300r)", what, exc, row)
    return results, dropped


# --- edges --------------------------------------------------------------------------------


@dataclass
class ConnectResult:
    edge: Edge
    token_id: int
    session_id: str
    replaced_channel: str | None


class EdgeRefused(Exception):
    """An agent may not connect; ``reason`` is the ``bye`` reason it is told."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Write a token's last_used_at at most this often (reconnect storms write nothing).
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass
class RegisterRequest:
    token: str | None
    channel_name: str
    hello: dict[str, Any]


def edge_register(*, token: str | None, channel_name: str, hello: dict[str, Any]) -> ConnectResult:
    """Register one agent connection; see :func:`edges_register`. Raises EdgeRefused."""
    result = edges_register(requests=[RegisterRequest(token, channel_name, hello)])[0]
    if isinstance(result, EdgeRefused):
        raise result
    return result


def edges_register(*, requests: list[RegisterRequest]) -> list[ConnectResult | EdgeRefused]:
    """Authenticate agents by their edge tokens and mark their edges online at their
    channels, storing what each ``hello`` announced. Returns, per request, a ConnectResult
    or the EdgeRefused that says why it may not connect (missing, unknown, revoked or
    expired token; a hello ``name`` that is not the token's edge; a suspended edge).

    One transaction and a handful of queries for the whole batch, whatever its size:
    when a bridge restarts, every edge reconnects at once, and per-edge ORM round trips
    would take seconds for a thousand edges.

    A connection still recorded for an edge is *replaced* (``replaced_channel``): the
    caller tells the old channel to go away. The newest connection always wins, so a fast
    reconnect after a network drop is never locked out by its own half-dead predecessor.
    Callers broadcast the invalidation of the edges' cache entries.
    """
    now = timezone.now()
    results: list[ConnectResult | EdgeRefused | None] = [None] * len(requests)
    digests: dict[int, str] = {}
    for i, req in enumerate(requests):
        if not req.token:
            results[i] = EdgeRefused(protocol.BYE_UNAUTHORIZED, "no edge token: send 'Authorization: Bearer <token>'")
        elif not req.token.startswith(EDGE_TOKEN_PREFIX) or len(req.token) > 200:
            results[i] = EdgeRefused(protocol.BYE_UNAUTHORIZED, "this is not an edge token")
        else:
            digests[i] = token_digest(req.token)
    if not digests:
        return results  # type: ignore[return-value]
    with transaction.atomic():
        tokens = {t.digest: t for t in EdgeToken.objects.filter(digest__in=padded(set(digests.values())))}
        edge_ids = {t.edge_id for t in tokens.values()}
        edges = {e.pk: e for e in Edge.objects.select_for_update().filter(pk__in=padded(edge_ids)).order_by("pk")}
        changed: dict[int, Edge] = {}
        manifests: dict[int, list[Any]] = {}
        touched_tokens: set[int] = set()
        for i, digest in digests.items():
            req, row = requests[i], tokens.get(digest)
            if row is None:
                results[i] = EdgeRefused(protocol.BYE_UNAUTHORIZED, "unknown edge token")
                continue
            if row.revoked_at is not None:
                results[i] = EdgeRefused(protocol.BYE_REVOKED, "this edge token was revoked")
                continue
            if row.expires_at is not None and row.expires_at <= now:
                results[i] = EdgeRefused(protocol.BYE_UNAUTHORIZED, "this edge token expired")
                continue
            edge = edges[row.edge_id]
            name = req.hello.get("name")
            if name is not None and name != edge.name:
                results[i] = EdgeRefused(protocol.BYE_UNAUTHORIZED,
                                         f"this token belongs to edge '{edge.name}', not '{name}'")
                continue
            if edge.suspended:
                results[i] = EdgeRefused(protocol.BYE_SUSPENDED,
                                         f"edge '{edge.name}' is suspended by its owner or an admin")
                continue
            replaced = edge.channel_name if edge.status == Edge.Status.ONLINE and edge.channel_name else None
            host = cast("dict[str, Any]", req.hello.get("host") if isinstance(req.hello.get("host"), dict) else {})
            edge.status = Edge.Status.ONLINE
            edge.channel_name = req.channel_name
            edge.session_id = secrets.token_hex(16)
            edge.connected_at = edge.last_seen = now
            edge.host = str(host.get("hostname", ""))[:255]
            edge.agent_version = str(req.hello.get("agent_version", ""))[:40]
            edge.protocol_version = req.hello.get("protocol")
            edge.facts = host
            changed[edge.pk] = edge
            manifests[edge.pk] = req.hello.get("plugins") or []
            if row.last_used_at is None or now - row.last_used_at > TOKEN_TOUCH_INTERVAL:
                touched_tokens.add(row.pk)
            results[i] = ConnectResult(edge=edge, token_id=row.pk, session_id=edge.session_id,
                                       replaced_channel=replaced)
        if changed:
            _edges_save_connected(list(changed.values()))
            _plugins_sync(manifests)
        if touched_tokens:
            EdgeToken.objects.filter(pk__in=padded(touched_tokens)).update(last_used_at=now)
    return results  # type: ignore[return-value]


_CONNECT_FIELDS = ["status", "channel_name", "session_id", "connected_at", "last_seen", "host", "agent_version",
                   "protocol_version", "facts"]


def _edges_save_connected(edges: list[Edge]) -> None:
    """One prepared UPDATE executed for many rows (``bulk_update`` builds CASE expressions
    per row and field, which costs more than the database work for large batches)."""
    fields = [Edge._meta.get_field(name) for name in _CONNECT_FIELDS]
    conn = connections[Edge.objects.db]
    qn = conn.ops.quote_name
    # Only quoted model metadata goes into the statement; values are parameters.
    sql = (f"UPDATE {qn(Edge._meta.db_table)} SET "  # noqa: S608
           + ", ".join(f"{qn(f.column)} = %s" for f in fields) + f" WHERE {qn('id')} = %s")
    rows = [[f.get_db_prep_save(getattr(e, f.attname), conn) for f in fields] + [e.pk] for e in edges]
    with conn.cursor() as cursor:
        cursor.executemany(sql, rows)


def _plugins_sync(manifests: dict[int, list[Any]]) -> None:
    """Make each edge's plugin registrations match its manifest, writing only changes (a
    reconnecting agent usually announces exactly what it announced before)."""
    existing: dict[int, dict[str, PluginRegistration]] = {}
    for p in PluginRegistration.objects.filter(edge_id__in=padded(manifests)):
        existing.setdefault(p.edge_id, {})[p.name] = p
    create, stale = [], []
    for edge_id, manifest in manifests.items():
        wanted: dict[str, dict[str, Any]] = {}
        for m in manifest:
            if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"]:
                continue
            wanted[m["name"][:100]] = {
                "version": str(m.get("version", ""))[:40],
                "description": str(m.get("description", "")),
                "routes": m.get("routes") if isinstance(m.get("routes"), list) else [],
                "ui_schema": m.get("ui_schema") if isinstance(m.get("ui_schema"), dict) else None,
            }
        have = existing.get(edge_id, {})
        stale += [p.pk for name, p in have.items() if name not in wanted]
        for name, fields in wanted.items():
            current = have.get(name)
            if current is None:
                create.append(PluginRegistration(edge_id=edge_id, name=name, **fields))
            elif any(getattr(current, k) != v for k, v in fields.items()):
                PluginRegistration.objects.filter(pk=current.pk).update(**fields)
    if stale:
        PluginRegistration.objects.filter(pk__in=padded(stale)).delete()
    if create:
        for chunk in chunks(create):
            PluginRegistration.objects.bulk_create(chunk)


def edge_disconnect(*, edge_id: int, session_id: str) -> bool:
    """Mark the edge offline if ``session_id`` is still its current connection (a replaced
    connection closing late must not take its successor offline). Returns whether it did;
    the caller (the edge's consumer, on the event loop) broadcasts the invalidation."""
    updated = Edge.objects.filter(pk=edge_id, session_id=session_id).update(
        status=Edge.Status.OFFLINE, channel_name="", disconnected_at=timezone.now(),
    )
    return bool(updated)


def edge_touch(*, edge_id: int, session_id: str, token_id: int) -> str:
    """Heartbeat of a connection: refresh ``last_seen`` and say whether the connection may
    go on: ``ok``, ``superseded`` (a newer connection took over), ``revoked`` (its token
    was revoked or expired) or ``suspended``. This is also how revocations made where no
    channel layer reaches this process (a CLI run beside the embedded bridge) take effect."""
    return edges_touch(touches=[(edge_id, session_id, token_id)])[0]


def edges_touch(*, touches: Sequence[tuple[int, str, int]]) -> list[str]:
    """:func:`edge_touch` for many connections (edge id, session id, token id) at once, in
    three queries per 256 whatever their number (IN lists padded: ``padded``); returns the
    states in the same order. A bridge process with thousands of edges writes their
    heartbeats this way (consumers.py), not three queries per ping."""
    states: list[str] = []
    now = timezone.now()
    touches = list(touches)
    for start in range(0, len(touches), 256):
        chunk = touches[start:start + 256]
        rows = {pk: (session, suspended) for pk, session, suspended in Edge.objects.filter(
            pk__in=padded(sorted({edge_id for edge_id, _, _ in chunk}))).values_list("pk", "session_id", "suspended")}
        current = sorted({edge_id for edge_id, session_id, _ in chunk
                          if edge_id in rows and rows[edge_id][0] == session_id})
        if current:
            Edge.objects.filter(pk__in=padded(current)).update(last_seen=now)
        active = set(EdgeToken.objects.active().filter(
            pk__in=padded(sorted({token_id for _, _, token_id in chunk}))).values_list("pk", flat=True))
        for edge_id, session_id, token_id in chunk:
            row = rows.get(edge_id)
            if row is None or row[0] != session_id:
                states.append("superseded")
            elif token_id not in active:
                states.append("revoked")
            elif row[1]:
                states.append("suspended")
            else:
                states.append("ok")
    return states


def edge_kick(*, edge: Edge, reason: str = protocol.BYE_DISCONNECTED, detail: str = "", retry: bool = True,
              actor: Any = None, record: bool = True) -> bool:
    """Disconnect an edge now (the agent is told why). Returns whether it was connected.
    With ``record``, the disconnect is kept in the admin audit trail with ``actor``."""
    if not (edge.channel_name and edge.status == Edge.Status.ONLINE):
        return False
    if record:
        action_record(actor=actor, action=ActionRecord.Action.EDGE_DISCONNECTED, edge=edge.name,
                      detail={"reason": reason, "detail": detail, "retry": retry})
    _edge_send_sync(edge.channel_name,
                    messages.edge_kick(reason, detail or "disconnected by an administrator", retry=retry))
    return True


def edge_suspend(*, edge: Edge, actor: Any = None) -> bool:
    """Suspend an edge: the proxy answers 503 ``edge_suspended`` and a connected agent is
    disconnected at once, told not to retry (it is refused at connect until resumed).
    Returns whether anything changed."""
    changed = _edge_suspended_set(edge=edge, suspended=True, actor=actor)
    edge_kick(edge=edge, reason=protocol.BYE_SUSPENDED, detail=f"edge '{edge.name}' was suspended", retry=False,
              record=False)
    return changed


def edge_resume(*, edge: Edge, actor: Any = None) -> bool:
    """Lift a suspension; the agent may connect again. Returns whether anything changed."""
    return _edge_suspended_set(edge=edge, suspended=False, actor=actor)


def _edge_suspended_set(*, edge: Edge, suspended: bool, actor: Any) -> bool:
    """Suspend or resume ``edge`` (recorded, and every process's cache told); whether it changed."""
    action = ActionRecord.Action.EDGE_SUSPENDED if suspended else ActionRecord.Action.EDGE_RESUMED
    with transaction.atomic():
        changed = bool(Edge.objects.filter(pk=edge.pk, suspended=not suspended).update(suspended=suspended))
        if changed:
            action_record(actor=actor, action=action, edge=edge.name)
    edge.refresh_from_db()
    broadcast.broadcast(broadcast.invalidation("edge", edge.name))
    return changed


def edges_mark_stale_offline() -> list[str]:
    """Mark offline every edge whose heartbeat is overdue (its bridge process died).
    Run periodically (``manage.py edge_sweep``); returns the names it changed."""
    cutoff = timezone.now() - Edge.stale_after()
    stale = list(Edge.objects.filter(status=Edge.Status.ONLINE, last_seen__lt=cutoff).values_list("pk", "name"))
    for pk, name in stale:
        Edge.objects.filter(pk=pk, last_seen__lt=cutoff).update(status=Edge.Status.OFFLINE, channel_name="")
        broadcast.broadcast(broadcast.invalidation("edge", name))
    return [name for _, name in stale]


def edges_mark_process_offline(*, process_ids: set[str]) -> list[str]:
    """Mark offline every edge whose connection lives in one of the given (dead) bridge
    processes; returns their names. Idempotent: every surviving process may call it."""
    from django.db.models import Q

    match = Q()
    for pid in process_ids:
        match |= Q(channel_name__contains=f"bridge.edge.{pid}.")
    rows = list(Edge.objects.filter(match, status=Edge.Status.ONLINE).values_list("pk", "name"))
    if rows:
        Edge.objects.filter(pk__in=padded(pk for pk, _ in rows), status=Edge.Status.ONLINE).filter(match).update(
            status=Edge.Status.OFFLINE, channel_name="", disconnected_at=timezone.now())
    return [name for _, name in rows]


def _edge_send_sync(channel_name: str, message: dict[str, Any]) -> None:
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    try:
        async_to_sync(get_channel_layer().send)(channel_name, message)
    except Exception:
        log.warning("could not reach edge channel %s", channel_name, exc_info=True)


# --- access: grants -----------------------------------------------------------------------


def grant_set(*, edge: Edge, role: str, user: Any = None, group: Any = None, actor: Any = None) -> EdgeGrant:
    """Give ``user`` or ``group`` (exactly one) ``role`` on ``edge``, replacing any role
    they had there. Every bridge process applies it at once (broadcast)."""
    if (user is None) == (group is None):
        raise ValidationError("grant a role to a user or to a group (exactly one)")
    if role not in EdgeGrant.Role.values:
        raise ValidationError(f"role must be one of {', '.join(EdgeGrant.Role.values)}")
    if user is not None and user.pk == edge.owner_id:
        raise ValidationError(f"{user} owns edge '{edge.name}' already")
    who = {"user": user} if user is not None else {"group": group}
    with transaction.atomic():
        grant, _ = EdgeGrant.objects.update_or_create(edge=edge, **who,
                                                      defaults={"role": role, "created_by": actor})
        action_record(actor=actor, action=ActionRecord.Action.GRANT_SET, edge=edge.name, target=grant.grantee,
                      detail={"role": role})
    broadcast.broadcast(broadcast.invalidation("edge", edge.name))
    return grant


def grant_remove(*, edge: Edge, user: Any = None, group: Any = None, actor: Any = None) -> bool:
    """Take away the role ``user`` or ``group`` had on ``edge``; returns whether they had one.
    Calls already forwarded finish; the next one is refused."""
    if (user is None) == (group is None):
        raise ValidationError("remove the role of a user or of a group (exactly one)")
    who = {"user": user} if user is not None else {"group": group}
    with transaction.atomic():
        grant = EdgeGrant.objects.filter(edge=edge, **who).select_related("user", "group").first()
        if grant is None:
            return False
        grantee = grant.grantee
        grant.delete()
        action_record(actor=actor, action=ActionRecord.Action.GRANT_REMOVED, edge=edge.name, target=grantee)
    broadcast.broadcast(broadcast.invalidation("edge", edge.name))
    return True


# --- audit --------------------------------------------------------------------------------


def action_record(*, actor: Any, action: str, edge: str = "", target: str = "",
                  detail: dict[str, Any] | None = None) -> ActionRecord:
    """Keep one administrative action in the audit trail (``actor`` None: command line)."""
    authenticated = actor is not None and getattr(actor, "is_authenticated", False)
    return ActionRecord.objects.create(
        actor_id=actor.pk if authenticated else None,
        actor_name=actor.get_username() if authenticated else "",
        action=action, edge=edge, target=target[:200], detail=detail or {},
    )


# Columns of CallRecord as written by call_records_write, in the order of its rows.
CALL_RECORD_COLUMNS = ("at", "uid", "username", "token_id", "edge", "plugin", "method", "path", "status",
                       "duration_ms", "bytes_in", "bytes_out", "request_id")
# Records may carry one more value: how the call came (``client``; the database's default,
# empty, when left out).
CALL_RECORD_COLUMNS_CLIENT = (*CALL_RECORD_COLUMNS, "client")


def call_records_write(*, rows: Sequence[tuple[Any, ...]]) -> int:
    """Store a batch of proxied-call records (tuples in CALL_RECORD_COLUMNS order, or all
    in CALL_RECORD_COLUMNS_CLIENT order; ``at`` an aware datetime); returns how many.

    This runs in a thread beside the proxy's event loop and competes with it for the GIL.
    Not ``bulk_create``: building a model instance per row costs several times the insert.
    On SQLite not ``executemany`` either: the sqlite3 module releases and re-takes the GIL
    around every row, and while the event loop is busy each re-take waits for its turn, so
    under load the writer fell behind the proxy (at 11,000 calls/s a backlog of 150,000
    records built up). Multi-row INSERTs of up to CALL_RECORD_ROWS rows (sizes from
    ``chunks``, so that few distinct statements are cached) take it a few times per
    batch. psycopg's ``executemany`` pipelines the rows and has no such problem (a query
    with thousands of placeholders would cost it more: see ``events._write``)."""
    if not rows:
        return 0
    connection = connections[CallRecord.objects.db]
    quote = connection.ops.quote_name
    table = quote(CallRecord._meta.db_table)
    names = CALL_RECORD_COLUMNS_CLIENT if len(rows[0]) == len(CALL_RECORD_COLUMNS_CLIENT) else CALL_RECORD_COLUMNS
    columns = ", ".join(quote(CallRecord._meta.get_field(name).column) for name in names)
    row_marks = "(" + ", ".join(["%s"] * len(names)) + ")"
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY: psycopg's executemany dumps every parameter in Python, a twelfth of a
            # scaled-out bridge's time per proxied call; COPY's row writer does it in C.
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:  # only quoted names
                for row in rows:
                    copy.write_row(row)
            return len(rows)
        if connection.vendor != "sqlite":
            adapt = connection.ops.adapt_datetimefield_value
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES {row_marks}",  # noqa: S608 - names, not data
                               [(adapt(row[0]), *row[1:]) for row in rows])
            return len(rows)
        # sqlite3's own cursor, with its own "?" marks: Django's wrapper rewrites every "%s"
        # of a statement with a regular expression on each execute (a sixth of this
        # function's time with 3,584 marks a statement).
        raw = connection.connection.cursor()
        row_marks = "(" + ", ".join(["?"] * len(names)) + ")"
        utc = dt_timezone.utc
        for chunk in chunks(rows, CALL_RECORD_ROWS):
            # What ops.adapt_datetimefield_value() makes of ``at`` (naive UTC text), cheaper.
            params = [value for row in chunk
                      for value in ((row[0] if row[0].tzinfo is utc else row[0].astimezone(utc))
                                    .replace(tzinfo=None).isoformat(" "), *row[1:])]
            raw.execute(f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608 - names and marks, not data
                        + ", ".join([row_marks] * len(chunk)), params)
    return len(rows)


# Most rows per INSERT statement on SQLite (14 parameters each: well under its limit of
# 32,766), a power of two (chunks).
CALL_RECORD_ROWS = 256


def rows_delete_older_than(*, model: type[Any], days: float, batch: int = 5000) -> int:
    """Delete rows of ``model`` whose ``at`` is older than ``days`` days, ``batch`` rows per
    statement so that a large backlog never holds a long lock; returns how many."""
    cutoff = timezone.now() - timedelta(days=days)
    total = 0
    while True:
        ids = list(model.objects.filter(at__lt=cutoff).order_by("pk").values_list("pk", flat=True)[:batch])
        if not ids:
            return total
        total += model.objects.filter(pk__in=ids).delete()[0]


def audit_prune(*, call_days: int, action_days: int | None = None, batch: int = 5000) -> tuple[int, int]:
    """Delete call records older than ``call_days`` days (and admin actions older than
    ``action_days``, if given; 0 or None keeps them). Deletes in batches so that a large
    backlog never holds a long lock. Returns (calls deleted, actions deleted)."""

    calls = rows_delete_older_than(model=CallRecord, days=call_days, batch=batch) if call_days and call_days > 0 else 0
    actions = (rows_delete_older_than(model=ActionRecord, days=action_days, batch=batch)
               if action_days and action_days > 0 else 0)
    return calls, actions
