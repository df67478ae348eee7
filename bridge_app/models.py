"""The bridge's state: edges, their tokens and plugins, and users' API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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
    "login", "logout", "oidc", "docs", "schema", "new", "notifications",
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


def edge_ended(parent_id: int | None, job: Any) -> bool:
    """Whether an edge is a child whose batch job has ended (``Edge.ended``; also for rows
    read as values, without a model instance)."""
    return bool(parent_id is not None and isinstance(job, dict) and job.get("ended"))


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
    # A child edge runs inside a batch job that its parent edge submitted (docs/ARCHITECTURE.md,
    # "Edges on compute nodes"); ``job`` says which and how it is doing: job_id (the parent's
    # psij job), native_id, executor, queue, account, nodes, duration, state, started_at, ended.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
                               editable=False)
    job = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def stale_after() -> timedelta:
        return timedelta(seconds=3 * edge_settings.HEARTBEAT_INTERVAL)

    @property
    def unix_user(self) -> str:
        """The Unix account the agent runs as (from its hello), or "" if not announced.
        Everything anyone runs on this edge runs as this account."""
        facts = self.facts if isinstance(self.facts, dict) else {}
        user = facts.get("user")
        return user if isinstance(user, str) else ""

    @property
    def unix_host(self) -> str:
        facts = self.facts if isinstance(self.facts, dict) else {}
        name = facts.get("hostname")
        return name if isinstance(name, str) and name else self.host

    @property
    def runs_as_root(self) -> bool:
        """True if the agent announced that it runs as root (user "root" or uid 0)."""
        facts = self.facts if isinstance(self.facts, dict) else {}
        return self.unix_user == "root" or str(facts.get("uid", "")) == "0"

    @property
    def ended(self) -> bool:
        """A child edge whose batch job has ended: it will not come back."""
        return edge_ended(self.parent_id, self.job)

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


class EdgeGrant(models.Model):
    """A role on an edge given to a user or a group by the edge's owner or an admin.

    ``viewer`` may call read-only routes; ``user`` may also call the others (submit, cancel,
    run tasks). Exactly one of ``user`` and ``group`` is set.
    """

    class Role(models.TextChoices):
        VIEWER = "viewer", "viewer (read-only routes)"
        USER = "user", "user (may also submit, cancel, run)"

    edge = models.ForeignKey(Edge, on_delete=models.CASCADE, related_name="grants")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="edge_grants",
    )
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="edge_grants")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )

    class Meta:
        ordering = ["edge__name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(user__isnull=False, group__isnull=True)
                           | models.Q(user__isnull=True, group__isnull=False)),
                name="grant_user_xor_group",
            ),
            models.UniqueConstraint(fields=["edge", "user"], condition=models.Q(user__isnull=False),
                                    name="unique_grant_per_user"),
            models.UniqueConstraint(fields=["edge", "group"], condition=models.Q(group__isnull=False),
                                    name="unique_grant_per_group"),
        ]

    @property
    def grantee(self) -> str:
        return f"group {self.group.name}" if self.group_id else str(self.user)

    def __str__(self) -> str:
        return f"{self.grantee} is {self.role} on {self.edge.name}"


class CallRecord(models.Model):
    """One proxied call, for the audit trail. Written in batches off the request path.

    Who and where are kept as plain values (ids and names), not foreign keys: the record
    must outlive the user, token or edge it names, and a batch must never fail because
    one of them was deleted between the call and the write.
    """

    at = models.DateTimeField(db_index=True)
    uid = models.BigIntegerField(null=True, blank=True, db_index=True, verbose_name="user id")
    username = models.CharField(max_length=150, blank=True)
    token_id = models.BigIntegerField(null=True, blank=True, verbose_name="API token id")
    edge = models.CharField(max_length=63, blank=True)
    plugin = models.CharField(max_length=100, blank=True)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500, blank=True, help_text="the plugin route")
    status = models.PositiveSmallIntegerField()
    duration_ms = models.FloatField()
    bytes_in = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    client = models.CharField(max_length=200, blank=True, default="", db_default="",
                              help_text="how the call came, when not plain REST: 'mcp CLIENT VERSION tool=TOOL'")

    class Meta:
        ordering = ["-at"]
        verbose_name = "proxied call"
        indexes = [
            models.Index(fields=["edge", "at"], name="callrecord_edge_at"),
            models.Index(fields=["username", "at"], name="callrecord_user_at"),
        ]

    def __str__(self) -> str:
        return f"{self.username or 'anonymous'} {self.method} /{self.edge}/{self.plugin}/{self.path} → {self.status}"


class ActionRecord(models.Model):
    """An administrative action: tokens issued or revoked, roles granted or removed, edges
    suspended, resumed or disconnected. ``actor`` None means the command line."""

    class Action(models.TextChoices):
        EDGE_TOKEN_ISSUED = "edge_token_issued"  # noqa: S105 - an action name
        EDGE_TOKEN_REVOKED = "edge_token_revoked"  # noqa: S105 - an action name
        API_TOKEN_ISSUED = "api_token_issued"  # noqa: S105 - an action name
        API_TOKEN_REVOKED = "api_token_revoked"  # noqa: S105 - an action name
        GRANT_SET = "grant_set"
        GRANT_REMOVED = "grant_removed"
        EDGE_SUSPENDED = "edge_suspended"
        EDGE_RESUMED = "edge_resumed"
        EDGE_DISCONNECTED = "edge_disconnected"
        CHILD_EDGE_LAUNCHED = "child_edge_launched"
        CHILD_EDGE_STOPPED = "child_edge_stopped"
        LOGIN_LOCKED_OUT = "login_locked_out"
        LOGIN_UNLOCKED = "login_unlocked"
        SUBSCRIPTION_CREATED = "subscription_created"
        SUBSCRIPTION_UPDATED = "subscription_updated"
        SUBSCRIPTION_DELETED = "subscription_deleted"
        SUBSCRIPTION_SECRET_ROTATED = "subscription_secret_rotated"  # noqa: S105 - an action name
        SUBSCRIPTION_REDELIVERED = "subscription_redelivered"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True, verbose_name="actor user id")
    actor_name = models.CharField(max_length=150, blank=True, verbose_name="actor")
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    edge = models.CharField(max_length=63, blank=True, db_index=True)
    target = models.CharField(max_length=200, blank=True, help_text="the token, user or group acted upon")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at"]
        verbose_name = "admin action"

    def __str__(self) -> str:
        return f"{self.actor_name or 'command line'}: {self.action} {self.edge} {self.target}".strip()


class EventRecord(models.Model):
    """An event that went out to live pages and ``GET /events``: an edge came or went
    (``topology``), or a plugin emitted a notification. Kept EVENTS_RETENTION_DAYS so that a
    subscriber that reconnects with ``Last-Event-ID`` gets what it missed (``events.py``).

    The id is the event's id on the wire. Who and where are plain values, like CallRecord:
    the record outlives the edge and user it names. ``owner_uid`` is the user on whose behalf
    the plugin worked (None: nobody's in particular; only the edge's owner and admins see it).
    """

    class Kind(models.TextChoices):
        TOPOLOGY = "topology"
        NOTIFICATION = "notification"

    at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    edge = models.CharField(max_length=63)
    plugin = models.CharField(max_length=100, blank=True)
    topic = models.CharField(max_length=100, blank=True)
    owner_uid = models.BigIntegerField(null=True, blank=True, verbose_name="owner user id")
    data = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "event"
        indexes = [models.Index(fields=["edge", "id"], name="eventrecord_edge_id")]

    def __str__(self) -> str:
        what = f"{self.plugin}/{self.topic}" if self.kind == self.Kind.NOTIFICATION else "topology"
        return f"#{self.pk} {self.edge} {what}"


# Subscriptions and their outbox live in their own module (bridge_app/notifications).
from .notifications.models import (  # noqa: E402, F401
    Delivery,
    NotifyCursor,
    Occurrence,
    Subscription,
    WalltimeWatch,
)
