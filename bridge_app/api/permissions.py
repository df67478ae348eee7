"""DRF permission policies of the bridge."""

from __future__ import annotations

from rest_framework import permissions

from ..models import ApiToken


class TokenScope(permissions.BasePermission):
    """Read-only API tokens may only use safe methods."""

    message = "this API token is read-only"

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if isinstance(token, ApiToken) and token.scope == ApiToken.Scope.READ:
            return request.method in permissions.SAFE_METHODS
        return True
