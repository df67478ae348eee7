"""The access policy of the bridge: who may see, call and manage an edge, and who may see
its events (and so the jobs, tasks and sessions they report).

Every place that decides access asks here: the directory's cached role
(``EdgeEntry.role_for``, the proxy's and the event stream's hot path), the database's
(``selectors.edge_role_for_user``, the REST API, the portal and notifications), the
proxy's read-only check, the event stream's and notifications' visibility rule, the DRF
permissions and the MCP tools. The functions here are pure: callers bring the facts (from
the cache or from the database), so the two readings cannot drift apart
(tests/test_access_policy.py compares them over a matrix of users, groups, grants,
suspended edges and token scopes).

Roles on an edge, strongest first:

* ``admin``: a site admin (superuser), every edge;
* ``owner``: the edge's owner;
* ``user``: granted ``user`` directly or through a group: may call every route;
* ``viewer``: granted ``viewer``: read-only routes only.

A user granted roles both directly and through groups gets the strongest. Managers (owner,
admin) suspend, resume and share the edge and see every notification of it; others see
only the notifications that concern them (their ``owner``). Topology events go to anyone
with a role. A read-only API token (scope ``read``) may only use read-only routes and safe
methods, whatever its user's role. Unknown and forbidden edges look the same to callers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeGuard

from django.db.models import Q

ADMIN, OWNER, USER, VIEWER = "admin", "owner", "user", "viewer"
# Roles that manage an edge: suspend, resume, share it, see all its notifications.
MANAGERS = frozenset({OWNER, ADMIN})
# Roles that may call routes that change things.
WRITERS = frozenset({ADMIN, OWNER, USER})
# API token scopes.
SCOPE_FULL, SCOPE_READ = "full", "read"
# Event kinds (as in ``events.py``; repeated here so the policy imports nothing of the bridge).
TOPOLOGY = "topology"


def strongest_grant(roles: Iterable[str | None]) -> str | None:
    """The strongest of the granted roles (``user`` over ``viewer``), None if none."""
    best = None
    for role in roles:
        if role == USER:
            return USER
        if role and best is None:
            best = role
    return best


def role_for(*, is_superuser: bool, user_id: Any, owner_id: Any, grants: Iterable[str | None] = (),
             active: bool = True) -> str | None:
    """A user's role on an edge: admin, owner, user, viewer, or None (no access).

    ``grants`` are the roles granted to the user on the edge, directly and through their
    groups (None entries are ignored). Inactive users have no role."""
    if not active:
        return None
    if is_superuser:
        return ADMIN
    if owner_id is not None and owner_id == user_id:
        return OWNER
    return strongest_grant(grants)


def may_see(role: str | None) -> TypeGuard[str]:
    """Whether the caller may see the edge (and call its read-only routes)."""
    return role is not None


def may_write(role: str | None) -> bool:
    """Whether the role may call routes that change things (a token's scope apart)."""
    return role in WRITERS


def token_may_write(scope: str) -> bool:
    """Whether an API token of ``scope`` may call routes that change things."""
    return scope != SCOPE_READ


def manages(role: str | None) -> bool:
    """Whether the role manages the edge: suspend, resume, share, every notification."""
    return role in MANAGERS


def may_see_event(role: str | None, kind: str, owner_uid: Any, user_id: Any) -> bool:
    """Whether a caller (``user_id``, with ``role`` on the event's edge) may see one of the
    edge's events: topology with any role; a notification only if it concerns the caller
    (``owner_uid``) or the caller manages the edge."""
    if role is None:
        return False
    if kind == TOPOLOGY:
        return True
    return role in MANAGERS or (owner_uid is not None and owner_uid == user_id)


def edge_visibility_q(*, user_id: Any, group_ids: Any) -> Q:
    """Edges a (non-admin) user may see, as a filter on ``Edge``: their own, and those
    granted to them or to one of ``group_ids`` (ids, or a queryset of groups)."""
    return Q(owner_id=user_id) | Q(grants__user_id=user_id) | Q(grants__group__in=group_ids)


def user_is_active(user: Any) -> bool:
    """An authenticated, active user (anything else has no role anywhere)."""
    return bool(getattr(user, "is_authenticated", False) and getattr(user, "is_active", False))


def is_site_admin(user: Any) -> bool:
    """A site admin (superuser): disconnects any edge, reads the whole audit trail."""
    return bool(user and getattr(user, "is_authenticated", False) and user.is_superuser)
