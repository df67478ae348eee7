"""The bridge's state: edges, their tokens and plugins, and users' API tokens."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from .conf import edge_settings

# First path segments the bridge itself uses; no edge may take one of these names, since
# edges are addressed as /{edge}/{plugin}/{route}.
RESERVED_NAMES = frozenset({
    "admin", "api", "static", "media", "edge", "edges", "events", "register", "accounts", "portal",
    "healthz", "readyz", "metrics", "tokens", "jobs", "tasks", "ws", "favicon.ico", "robots.txt",
    "login", "logout", "oidc", "docs", "schema",
})

EDGE_NAME_RE = r"^[a-z0-9][a-z0-9._-]{0,62}$"
edge_name_validator = RegexValidator(
    EDGE_NAME_RE, "Edge names are 1-63 characters: lower-case letters, digits, '.', '_' and '-', "
    "starting with a letter or digit.",
)


def validate_edge_name(value: str) -> None:
    from django.core.exceptions import ValidationError

    edge_name_validator(value)
    if value in RESERVED_NAMES:
        raise ValidationError(f"'{value}' is reserved by the bridge; choose another edge name.")


class Edge(models.Model):
    """An HPC endpoint. Its name comes from its token; its socket lives in one bridge
    process, addressed through ``channel_name``."""

    class Status(models.TextChoices):
        ONLINE = "online"
        OFFLINE = "offline"

    name = models.CharField(max_length=63, unique=True, validators=[validate_edge_name])
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="edges",
    )
    description = models.CharField(max_length=200, blank=True)
    suspended = models.BooleanField(default=False, help_text="A suspended edge may not connect or be used.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OFFLINE)
    channel_name = models.CharField(max_length=200, blank=True, editable=False)
    session_id = models.CharField(max_length=64, blank=True, editable=False)
    connected_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_seen = models.DateTimeField(null=True, blank=True, editable=False)
    disconnected_at = models.DateTimeField(null=True, blank=True, editable=False)
    host = models.CharField(max_length=255, blank=True, editable=False)
    agent_version = models.CharField(max_length=40, blank=True, editable=False)
    protocol_version = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    facts = models.JSONField(default=dict, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def stale_after() -> timedelta:
        return timedelta(seconds=3 * edge_settings.HEARTBEAT_INTERVAL)

    @property
    def is_online(self) -> bool:
        """Online means connected *and* heard from recently: a bridge process that died
        cannot leave its edges looking online for longer than the heartbeat window."""
        return (
            self.status == self.Status.ONLINE
            and self.last_seen is not None
            and timezone.now() - self.last_seen <= self.stale_after()
        )


class PluginRegistration(models.Model):
    """A plugin an edge announced in its last ``hello``."""

    edge = models.ForeignKey(Edge, on_delete=models.CASCADE, related_name="plugins")
    name = models.CharField(max_length=100)
    version = models.CharField(max_length=40, blank=True)
    description = models.TextField(blank=True)
    routes = models.JSONField(default=list, blank=True)
    ui_schema = models.JSONField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["edge__name", "name"]
        constraints = [models.UniqueConstraint(fields=["edge", "name"], name="unique_plugin_per_edge")]

    def __str__(self) -> str:
        return f"{self.edge.name}/{self.name}"


class TokenQuerySet(models.QuerySet):
    def active(self) -> TokenQuerySet:
        now = timezone.now()
        unexpired = models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        return self.filter(unexpired, revoked_at__isnull=True)


class TokenBase(models.Model):
    """A bearer secret, stored only as its SHA-256 digest (the secret is random, so a
    plain digest is safe and fast); ``prefix`` identifies it in lists and logs."""

    prefix = models.CharField(max_length=16, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = TokenQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


class EdgeToken(TokenBase):
    """What an agent presents at ``/register``. The edge's name comes from its token."""

    edge = models.ForeignKey(Edge, on_delete=models.CASCADE, related_name="tokens")
    note = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.edge.name})"


class ApiToken(TokenBase):
    """A user's personal token for REST callers and the SDK."""

    class Scope(models.TextChoices):
        READ = "read", "read-only"
        FULL = "full", "full"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    scope = models.CharField(max_length=4, choices=Scope.choices, default=Scope.FULL)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
