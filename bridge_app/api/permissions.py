"""DRF permission policies of the bridge.

Object permissions here take an :class:`~bridge_app.models.Edge`. Views look edges up
through ``selectors.edge_list_for_user`` first, so an edge the caller may not see is a
404 before any of these run: unknown and forbidden look the same.
"""

from __future__ import annotations

from rest_framework import permissions

from ..access import policy
from ..domain.selectors import edge_role_for_user
from ..models import ApiToken


class TokenScope(permissions.BasePermission):
    """Read-only API tokens may only use safe methods."""

    message = "this API token is read-only"

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if isinstance(token, ApiToken) and not policy.token_may_write(token.scope):
            return request.method in permissions.SAFE_METHODS
        return True


class IsEdgeManager(permissions.BasePermission):
    """The edge's owner or a site admin: they suspend and resume it and share it."""

    message = "only the edge's owner or a site admin may do this"

    def has_object_permission(self, request, view, obj) -> bool:
        return policy.manages(edge_role_for_user(user=request.user, edge=obj))


class IsSiteAdmin(permissions.BasePermission):
    """Site admins (superusers) only: disconnecting any edge, the whole audit trail."""

    message = "only site admins may do this"

    def has_permission(self, request, view) -> bool:
        return policy.is_site_admin(request.user)
