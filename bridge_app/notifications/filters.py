"""Which events a subscription wants, and whether its user may see them.

The visibility rule is the event stream's (``policy.may_see_event``, with roles from
``selectors.edge_role_for_user``: ``policy.role_for`` over the database's grants): a
``topology`` event for any role on the edge, a ``notification`` only for the user it
concerns (its owner) and the edge's owner and site admins. It is checked when a delivery
is created and again just before it is sent, so a grant removed in between stops it.
"""

from __future__ import annotations

from typing import Any

from ..access import policy
from ..streams.events import NOTIFICATION, TOPOLOGY

ONLINE, OFFLINE = "edge_online", "edge_offline"


def event_topic(kind: str, topic: str, data: Any) -> str:
    """The topic a filter sees: a plugin's topic, or edge_online / edge_offline."""
    if kind == TOPOLOGY:
        return ONLINE if isinstance(data, dict) and data.get("online") else OFFLINE
    return topic


def event_states(data: Any) -> set[str]:
    """States an event reports: its ``state``, or its batch's ``tasks[].state``."""
    if not isinstance(data, dict):
        return set()
    states = set()
    if isinstance(data.get("state"), str):
        states.add(data["state"])
    tasks = data.get("tasks")
    if isinstance(tasks, list):
        states.update(t["state"] for t in tasks if isinstance(t, dict) and isinstance(t.get("state"), str))
    return states


def wants(sub: Any, *, kind: str, edge: str, plugin: str, topic: str, data: Any) -> bool:
    """Whether ``sub``'s filter takes the event (visibility is checked apart)."""
    if sub.edges and edge not in sub.edges:
        return False
    if sub.plugin and (kind != NOTIFICATION or plugin != sub.plugin):
        return False
    if sub.topic and event_topic(kind, topic, data) != sub.topic:
        return False
    if sub.states:
        wanted = {str(s).upper() for s in sub.states}
        if not {s.upper() for s in event_states(data)} & wanted:
            return False
    if sub.match:
        if not isinstance(data, dict):
            return False
        for key, value in sub.match.items():
            if data.get(key) != value:
                return False
    return True


def may_see(*, user: Any, role: str | None, kind: str, owner_uid: int | None) -> bool:
    """The events stream's rule (``policy.may_see_event``) for a user and their role on the edge."""
    if not getattr(user, "is_active", False):
        return False
    return policy.may_see_event(role, kind, owner_uid, user.pk)


class RoleCache:
    """Roles of users on edges for one pass of the matcher or dispatcher (a pass is short:
    a grant removed during it applies from the next one)."""

    def __init__(self) -> None:
        self._roles: dict[tuple[int, str], str | None] = {}
        self._edges: dict[str, Any] = {}

    def role(self, user: Any, edge_name: str) -> str | None:
        from ..domain.selectors import edge_role_for_user
        from ..models import Edge

        key = (user.pk, edge_name)
        if key not in self._roles:
            if edge_name not in self._edges:
                self._edges[edge_name] = Edge.objects.filter(name=edge_name).first()
            edge = self._edges[edge_name]
            if edge is None:  # gone: only site admins saw everything
                self._roles[key] = policy.ADMIN if user.is_active and user.is_superuser else None
            else:
                self._roles[key] = edge_role_for_user(user=user, edge=edge)
        return self._roles[key]

    def visible(self, user: Any, *, kind: str, edge: str, owner_uid: int | None) -> bool:
        return may_see(user=user, role=self.role(user, edge), kind=kind, owner_uid=owner_uid)
