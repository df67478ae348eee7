"""What people asked to be told, and the outbox of what is owed to them.

``Subscription``: a user's filter over the events they may see and one target (a webhook,
an e-mail address, or the portal's desktop notifications). ``Delivery``: one (event,
subscription) pair that the matcher found due; unique, so however many bridge processes
match the same events, each pair is owed once. ``NotifyCursor``: the id of the last event
the matcher has looked at (advanced in the same transaction as the deliveries it created,
so a crash loses nothing and repeats nothing). ``Occurrence``: derived events already
emitted, so that each is emitted once per occurrence.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


class Subscription(models.Model):
    class Target(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"
        BROWSER = "browser"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="subscriptions")
    name = models.CharField(max_length=100, blank=True)
    # The filter. Empty means "any": edges (names; empty = every edge the user may see),
    # plugin, topic (a plugin's topic, or edge_online / edge_offline for topology events),
    # states (the event's ``state``, or any of a batch's ``tasks[].state``), and ``match``:
    # top-level data fields that must be equal (e.g. {"job_id": "…"}).
    edges = models.JSONField(default=list, blank=True)
    plugin = models.CharField(max_length=100, blank=True)
    topic = models.CharField(max_length=100, blank=True)
    states = models.JSONField(default=list, blank=True)
    match = models.JSONField(default=dict, blank=True)
    target = models.CharField(max_length=8, choices=Target.choices)
    url = models.URLField(max_length=500, blank=True, help_text="webhook target (https)")
    email = models.EmailField(blank=True, help_text="e-mail target (default: the user's address)")
    secret = models.CharField(max_length=80, default=new_secret, editable=False,
                              help_text="signs webhook deliveries; shown to the user once")
    active = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Events up to this id existed before the subscription: never delivered to it.
    start_after = models.BigIntegerField(default=0, editable=False)
    last_error = models.CharField(max_length=500, blank=True, editable=False)
    # Nothing is due before this (the head delivery's next attempt, or an e-mail batch's end).
    retry_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_delivered_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The process delivering this subscription's events now, and until when (a lease: a
    # process that dies leaves it to expire, and another process takes over).
    lease_owner = models.CharField(max_length=80, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["active", "target"], name="subscription_active_target")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.user} → {self.target} {self.url or self.email}".strip()

    def destination(self) -> str:
        if self.target == self.Target.WEBHOOK:
            return self.url
        if self.target == self.Target.EMAIL:
            return self.email or getattr(self.user, "email", "")
        return "this browser"


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        DEAD = "dead", "dead-lettered"
        SKIPPED = "skipped", "skipped (no longer visible)"

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.BigIntegerField()
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["subscription", "event_id"], name="delivery_once")]
        indexes = [models.Index(fields=["status", "subscription", "event_id"], name="delivery_due")]

    def __str__(self) -> str:
        return f"event #{self.event_id} → subscription #{self.subscription_id}: {self.status}"


class NotifyCursor(models.Model):
    """One row (pk 1): the last event id the matcher has handled."""

    last_event_id = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "notification cursor"


class Occurrence(models.Model):
    """A derived event already emitted (``key`` names the occurrence: the edge and the
    disconnection time, the job and its deadline…)."""

    key = models.CharField(max_length=200, unique=True)
    at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class WalltimeWatch(models.Model):
    """A running psij job with a walltime (from its ACTIVE ``job_status`` event), until it
    ends or the bridge has warned that its walltime is near."""

    edge = models.CharField(max_length=63)
    job_id = models.CharField(max_length=100)
    owner_uid = models.BigIntegerField(null=True, blank=True)
    deadline = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["edge", "job_id"], name="walltime_watch_once")]

    def __str__(self) -> str:
        return f"{self.edge} job {self.job_id} until {self.deadline}"
