"""DRF authentication with personal API tokens (``Authorization: Bearer rda_…``)."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions

from ..access.tokens import API_TOKEN_PREFIX, bearer_from_header, token_digest
from ..core.directory import directory
from ..models import ApiToken


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """Accepts ``Bearer`` (or ``Token``) API tokens; a bad token is a 401, never anonymous."""

    keyword = "Bearer"

    def authenticate(self, request) -> tuple[Any, ApiToken] | None:
        token = bearer_from_header(request.META.get("HTTP_AUTHORIZATION"))
        if token is None:
            return None
        row = None
        if token.startswith(API_TOKEN_PREFIX) and len(token) <= 200:
            row = ApiToken.objects.active().select_related("user").filter(digest=token_digest(token)).first()
        if row is None or not row.user.is_active:
            raise exceptions.AuthenticationFailed("invalid, expired or revoked API token")
        directory.used_tokens.add(row.pk)
        return row.user, row

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="radical-edge"'
