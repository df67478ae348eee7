"""Shared argument handling of ``edge_grant`` and ``edge_revoke``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import CommandError

from bridge_app.models import Edge


def edge_named(name: str) -> Edge:
    edge = Edge.objects.select_related("owner").filter(name=name).first()
    if edge is None:
        raise CommandError(f"no edge named {name!r}")
    return edge


def grantee(name: str, *, group: bool) -> dict[str, Any]:
    """``{"user": …}`` or ``{"group": …}`` for the services' keyword arguments."""
    if group:
        found = Group.objects.filter(name=name).first()
        if found is None:
            raise CommandError(f"no group named {name!r}")
        return {"group": found}
    user_model = get_user_model()
    try:
        return {"user": user_model.objects.get_by_natural_key(name)}
    except user_model.DoesNotExist:
        raise CommandError(f"no user named {name!r}") from None
