"""Forms of the portal's tokens and sharing pages."""

from __future__ import annotations

from typing import Any

from django import forms

from bridge_app.models import ApiToken, EdgeGrant, validate_edge_name


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, label="Label",
                           help_text="What the token is for, e.g. 'laptop SDK' (optional).")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.FULL, label="Scope",
                              help_text="A read-only token may only call read-only routes and GET resources.")
    expires_in_days = forms.IntegerField(min_value=1, max_value=3650, required=False, initial=90,
                                         label="Expires after (days)", help_text="Leave empty for no expiry.")


class GrantForm(forms.Form):
    """Share an edge. The role "user" hands over the agent's Unix account, so it needs an
    explicit confirmation naming that account."""

    KIND_CHOICES = [("user", "a user"), ("group", "a group")]

    kind = forms.ChoiceField(choices=KIND_CHOICES, initial="user", label="Share with")
    name = forms.CharField(max_length=150, label="Username or group name")
    role = forms.ChoiceField(choices=EdgeGrant.Role.choices, initial=EdgeGrant.Role.VIEWER, label="Role")
    confirm_identity = forms.BooleanField(required=False)

    def __init__(self, *args: Any, account: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        account = account or {}
        who = f"{account['user']} on {account['host']}" if account.get("user") else "the agent's Unix account"
        self.fields["confirm_identity"].label = (
            f"I understand that a “user” runs programs as {who}, with that account's files and allocations")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("role") == EdgeGrant.Role.USER and not data.get("confirm_identity"):
            self.add_error("confirm_identity", "Confirm that you hand over this Unix account, or choose “viewer”.")
        return data


class EdgeAddForm(forms.Form):
    name = forms.CharField(max_length=63, label="Edge name", validators=[validate_edge_name],
                           help_text="Lower-case letters, digits, '.', '_' and '-', e.g. polaris-login. "
                                     "Programs address the edge by this name.")
    description = forms.CharField(max_length=200, required=False, label="Description",
                                  help_text="What runs there, e.g. 'my account on the Polaris login node' (optional).")


class SubscriptionForm(forms.Form):
    """A new subscription from the Notifications page (checked again by the service)."""

    TARGETS = [("browser", "Desktop notification (while the portal is open)"), ("email", "E-mail"),
               ("webhook", "Webhook (HTTPS POST, signed)")]
    TOPICS = [("", "Any"), ("job_status", "Batch job state (psij)"), ("task_status", "Task state (rhapsody)"),
              ("edge_online", "Edge connected"), ("edge_offline", "Edge disconnected"),
              ("edge_offline_long", "Edge offline for a while"),
              ("job_walltime_near", "Job close to its walltime"),
              ("allocation_low", "Allocation running low")]

    name = forms.CharField(max_length=100, required=False, label="Label")
    target = forms.ChoiceField(choices=TARGETS, initial="browser")
    url = forms.URLField(required=False, label="Webhook URL", max_length=500, assume_scheme="https")
    email = forms.EmailField(required=False, label="E-mail address", help_text="default: your account's address")
    edges = forms.MultipleChoiceField(required=False, help_text="none selected: every edge you may use",
                                      widget=forms.SelectMultiple(attrs={"size": 4}))
    topic = forms.ChoiceField(choices=TOPICS, required=False)
    states = forms.CharField(required=False, max_length=200, help_text="comma-separated, e.g. COMPLETED, FAILED")
    expires_in_days = forms.IntegerField(required=False, min_value=1, max_value=3650, label="Expires after (days)")

    def __init__(self, *args, edge_names: list[str] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["edges"].choices = [(n, n) for n in edge_names]


class ChildLaunchForm(forms.Form):
    """Start an edge on compute nodes (a child edge) from the parent's page."""

    EXECUTORS = [("slurm", "Slurm"), ("pbs", "PBS"), ("lsf", "LSF"), ("local", "local (this host, for testing)")]
    CONNECTIVITY = [("auto", "auto: direct, else through this edge"), ("direct", "direct to the bridge"),
                    ("relay", "through this edge (compute nodes without a route out)")]

    executor = forms.ChoiceField(choices=EXECUTORS, initial="slurm", label="Scheduler")
    queue = forms.CharField(max_length=200, required=False, label="Queue (partition)")
    account = forms.CharField(max_length=200, required=False, label="Account (project)")
    nodes = forms.IntegerField(min_value=1, max_value=100_000, initial=1, label="Nodes")
    minutes = forms.IntegerField(min_value=1, max_value=366 * 24 * 60, initial=60, label="Walltime (minutes)")
    plugins = forms.CharField(max_length=400, required=False, initial="sysinfo,psij,rhapsody,queue_info,files",
                              label="Plugins", help_text="Comma-separated.")
    name = forms.RegexField(r"^[a-z0-9][a-z0-9_-]{0,30}$", required=False, label="Name suffix",
                            help_text="The edge is named after this one, PARENT.SUFFIX (random if empty).")
    connectivity = forms.ChoiceField(choices=CONNECTIVITY, initial="auto", label="Reaching the bridge")

    def launch_fields(self) -> dict[str, Any]:
        """The cleaned form in the shape of ``ChildLaunchSerializer``'s validated data."""
        data = self.cleaned_data
        plugins = [p.strip() for p in (data.get("plugins") or "").split(",") if p.strip()]
        return {"executor": data["executor"], "queue": data.get("queue") or "", "account": data.get("account") or "",
                "nodes": data["nodes"], "duration": float(data["minutes"] * 60), "plugins": plugins or None,
                "name": data.get("name") or None, "bye_margin": None, "connectivity": data["connectivity"],
                "custom_attributes": {}}
