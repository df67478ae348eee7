"""Forms of the portal's tokens and sharing pages."""

from __future__ import annotations

from django import forms

from bridge_app.models import ApiToken, EdgeGrant


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, label="Label",
                           help_text="What the token is for, e.g. 'laptop SDK' (optional).")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.FULL, label="Scope",
                              help_text="A read-only token may only call read-only routes and GET resources.")
    expires_in_days = forms.IntegerField(min_value=1, max_value=3650, required=False, initial=90,
                                         label="Expires after (days)", help_text="Leave empty for no expiry.")


class GrantForm(forms.Form):
    KIND_CHOICES = [("user", "a user"), ("group", "a group")]

    kind = forms.ChoiceField(choices=KIND_CHOICES, initial="user", label="Share with")
    name = forms.CharField(max_length=150, label="Username or group name")
    role = forms.ChoiceField(choices=EdgeGrant.Role.choices, initial=EdgeGrant.Role.VIEWER, label="Role")
