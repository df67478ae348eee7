"""Keeping the proxy's cached access data honest when users and groups change.

The proxy decides who may call what from in-process caches (``directory.py``): who a
token belongs to (with the user's groups and admin flag) and each edge's grants. Grants
and tokens change through ``services.py``, which broadcasts invalidations itself. Users
and group memberships change in Django admin or elsewhere, so the signals here broadcast
an ``access`` invalidation whenever a user is deactivated or promoted, or joins or leaves
a group: every bridge process then reloads what it caches, at once.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from ..core import broadcast

# User fields whose change alters what the proxy lets the user do.
_ACCESS_FIELDS = frozenset({"is_active", "is_superuser", "is_staff"})


def _invalidate_access() -> None:
    # After commit: another process reloading earlier would cache the old state again.
    transaction.on_commit(lambda: broadcast.broadcast(broadcast.invalidation("access")))


def _user_saved(sender: Any, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
    if created:
        return  # a new user has no tokens cached anywhere yet
    if update_fields is not None and not (set(update_fields) & _ACCESS_FIELDS):
        return  # e.g. last_login on every login
    _invalidate_access()


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    _invalidate_access()


def _groups_changed(sender: Any, action: str, **kwargs: Any) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        _invalidate_access()


def connect_signals() -> None:
    """Connect the receivers above (called once from ``BridgeAppConfig.ready``)."""
    user_model = get_user_model()
    post_save.connect(_user_saved, sender=user_model, dispatch_uid="radical_edge_user_saved")
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid="radical_edge_user_deleted")
    post_delete.connect(_user_deleted, sender=Group, dispatch_uid="radical_edge_group_deleted")
    m2m_changed.connect(_groups_changed, sender=user_model.groups.through, dispatch_uid="radical_edge_groups")
