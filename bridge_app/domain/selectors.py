"""Reads: queries of bridge state, named ``<entity>_<query>``."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from ..access import policy
from ..conf import edge_settings
from ..models import ApiToken, CallRecord, Edge, EdgeGrant


def edge_visibility_filter(user: Any) -> Q:
    """Edges a user may see: their own, and those granted to them or their groups."""
    return policy.edge_visibility_q(user_id=user.pk, group_ids=user.groups.all())


def edge_list_for_user(*, user: Any) -> QuerySet[Edge]:
    """Every edge ``user`` may see (all of them for site admins), with plugins prefetched.
    Anonymous and inactive users see none."""
    if not policy.user_is_active(user):
        return Edge.objects.none()
    if user.is_superuser:
        qs = Edge.objects.all()
    else:
        # A subquery rather than DISTINCT over the joins: grants through several groups
        # would otherwise repeat an edge.
        qs = Edge.objects.filter(pk__in=Edge.objects.filter(edge_visibility_filter(user)).values("pk"))
    return qs.select_related("owner").prefetch_related("plugins")


def edge_get_for_user(*, user: Any, name: str) -> Edge | None:
    """The edge named ``name`` if ``user`` may see it; None for unknown *and* forbidden."""
    return edge_list_for_user(user=user).filter(name=name).first()


def edge_role_for_user(*, user: Any, edge: Edge) -> str | None:
    """``user``'s role on ``edge``: admin, owner, user, viewer or None (no access). A user
    granted a role both directly and through groups gets the strongest."""
    if not policy.user_is_active(user):
        return None
    if user.is_superuser or edge.owner_id == user.pk:
        grants: Any = ()  # no query: the grants cannot change the answer
    else:
        grants = (EdgeGrant.objects.filter(edge=edge).filter(Q(user=user) | Q(group__in=user.groups.all()))
                  .values_list("role", flat=True))
    return policy.role_for(is_superuser=user.is_superuser, user_id=user.pk, owner_id=edge.owner_id, grants=grants)


def edge_add_allowed(*, user: Any) -> bool:
    """Whether ``user`` may add an edge of their own in the portal now: site admins always,
    others while they own fewer than ``USER_EDGES_MAX`` edges."""
    if not policy.user_is_active(user):
        return False
    if user.is_superuser:
        return True
    limit = int(edge_settings.USER_EDGES_MAX or 0)
    return limit > 0 and Edge.objects.filter(owner=user).count() < limit


def edge_get_managed_by(*, user: Any, name: str) -> Edge | None:
    """The edge named ``name`` if ``user`` may manage it (its owner or a site admin);
    None for unknown *and* forbidden."""
    edge = edge_get_for_user(user=user, name=name)
    if edge is None or not policy.manages(edge_role_for_user(user=user, edge=edge)):
        return None
    return edge


def grant_list_for_edge(*, edge: Edge) -> QuerySet[EdgeGrant]:
    return EdgeGrant.objects.filter(edge=edge).select_related("user", "group", "created_by").order_by("id")


def api_token_list_for_user(*, user: Any) -> QuerySet[ApiToken]:
    """A user's own API tokens, newest first (revoked and expired ones too)."""
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def call_record_list(*, edge: str | None = None, username: str | None = None) -> QuerySet[CallRecord]:
    """Proxied calls, newest first, optionally of one edge or one user."""
    qs = CallRecord.objects.all()
    if edge:
        qs = qs.filter(edge=edge)
    if username:
        qs = qs.filter(username=username)
    return qs.order_by("-at")
