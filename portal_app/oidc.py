"""Single sign-on with OpenID Connect (mozilla-django-oidc), when ``RADICAL_OIDC_ENABLED=1``.

People are matched to bridge accounts by one claim (``RADICAL_OIDC_USERNAME_CLAIM``,
default ``preferred_username``), which becomes their username. That claim must be one the
provider controls and users cannot edit, or someone could rename themselves into another
person's account: docs/OPERATIONS.md, "Single sign-on", lists safe choices.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

# Django's default username validator, and its length limit.
_USERNAME_OK = re.compile(r"^[\w.@+-]{1,150}$")


class SiteOIDCBackend(OIDCAuthenticationBackend):
    """Accounts keyed by the configured username claim, with name and email kept current."""

    @staticmethod
    def username_claim() -> str:
        return getattr(settings, "RADICAL_OIDC_USERNAME_CLAIM", "preferred_username")

    def username_from(self, claims: dict[str, Any]) -> str | None:
        value = claims.get(self.username_claim())
        return value if isinstance(value, str) and _USERNAME_OK.match(value) else None

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return self.username_from(claims) is not None

    def filter_users_by_claims(self, claims: dict[str, Any]):
        username = self.username_from(claims)
        if username is None:
            return self.UserModel.objects.none()
        return self.UserModel.objects.filter(username=username)

    def create_user(self, claims: dict[str, Any]):
        user = self.UserModel.objects.create_user(self.username_from(claims), email=claims.get("email") or "")
        return self.update_user(user, claims)

    def update_user(self, user, claims: dict[str, Any]):
        fields = {"email": claims.get("email"), "first_name": claims.get("given_name"),
                  "last_name": claims.get("family_name")}
        changed = [name for name, value in fields.items()
                   if isinstance(value, str) and value and getattr(user, name) != value[:150]]
        for name in changed:
            setattr(user, name, fields[name][:150])
        if changed:
            user.save(update_fields=changed)
        return user

    def describe_user_by_claims(self, claims: dict[str, Any]) -> str:
        return f"{self.username_claim()} {self.username_from(claims)!r}"
