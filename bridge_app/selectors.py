"""Reads: queries of bridge state, named ``<entity>_<query>``."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from .models import Edge


def edge_visibility_filter(user: Any) -> Q:
    """Edges a user may see: their own, and those granted to them or their groups."""
    q = Q(owner=user)
    if hasattr(Edge, "grants"):
        q |= Q(grants__user=user) | Q(grants__group__in=user.groups.all())
    return q


def edge_list_for_user(*, user: Any) -> QuerySet[Edge]:
    """Every edge ``user`` may see (all of them for site admins), with plugins prefetched."""
    qs = Edge.objects.all() if user.is_superuser else Edge.objects.filter(edge_visibility_filter(user)).distinct()
    return qs.select_related("owner").prefetch_related("plugins")


def edge_get_for_user(*, user: Any, name: str) -> Edge | None:
    """The edge named ``name`` if ``user`` may see it; None for unknown *and* forbidden."""
    return edge_list_for_user(user=user).filter(name=name).first()
