"""Child edges: edges on compute nodes, started inside batch jobs by their parent edge.

A user asks a parent edge for a child (``POST /api/v1/edges/{parent}/children``). The bridge

1. creates the child edge ``{parent}.{suffix}``, owned by the parent's owner and shared
   with whoever the parent is shared with (its grants are copied), and issues the child's
   token, bound to the child's name and lifetime (:func:`child_edge_create`);
2. calls the parent's ``edges/launch`` route with that token as the caller, and the parent
   submits the child agent as a batch job through psij (``edge_agent/plugins/edges``);
3. follows the job through the parent's psij ``job_status`` events
   (:func:`child_edge_job_changed`): when it starts, the token's expiry is pulled in to the
   walltime plus ``CHILD_TOKEN_MARGIN``; when it ends (completed, failed, cancelled, killed)
   the token is revoked and the child disconnected;
4. marks the child ended when its agent says ``bye`` with reason ``allocation_ended``
   (:func:`child_edge_end`), so that calls get ``410 edge_ended`` rather than a timeout.

Stopping a child (``POST /api/v1/edges/{child}/stop``) cancels its job through the parent
and revokes its token at once.
"""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import timedelta
from typing import Any, Callable

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from edge_agent import protocol

from .. import messages
from ..access.tokens import EDGE_TOKEN_PREFIX, token_generate
from ..conf import edge_settings
from ..core import broadcast
from ..core.directory import Principal
from ..models import ActionRecord, Edge, EdgeGrant, EdgeToken, validate_edge_name
from .services import _edge_send_sync, action_record

log = logging.getLogger(__name__)

FINAL_STATES = ("COMPLETED", "FAILED", "CANCELED")
# The states a child's job goes through, as the API shows them.
PENDING, SUBMITTING = "QUEUED", "SUBMITTING"
_RANK: dict[Any, int] = {SUBMITTING: 0, "NEW": 0, "QUEUED": 1, "ACTIVE": 2}


class LaunchFailed(Exception):
    """The parent could not start the child (its answer's status, error and detail)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def child_name_for(parent: Edge, suffix: str | None) -> str:
    """``{parent}.{suffix}``, with a random suffix when none is given."""
    suffix = (suffix or secrets.token_hex(3)).strip().lower()
    name = f"{parent.name}.{suffix}"
    validate_edge_name(name)
    return name


def child_edge_create(*, parent: Edge, actor: Any, suffix: str | None, launch: dict[str, Any]) -> tuple[Edge, str]:
    """Create the child edge of ``parent`` and its token; returns the edge and the token's
    plaintext (only ever sent to the parent agent). Raises ValidationError for a taken or
    invalid name, or a parent that is itself a child."""
    if parent.parent_id is not None:
        raise ValidationError("a child edge cannot start children of its own; ask its parent")
    name = child_name_for(parent, suffix)
    duration = float(launch["duration"])
    expires = timezone.now() + timedelta(seconds=edge_settings.CHILD_QUEUE_WAIT_MAX + duration
                                         + edge_settings.CHILD_TOKEN_MARGIN)
    with transaction.atomic():
        if Edge.objects.filter(name=name).exists():
            raise ValidationError(f"the name '{name}' is taken; choose another")
        child = Edge.objects.create(
            name=name, owner=parent.owner, parent=parent, description=f"compute-node edge of {parent.name}",
            job={**{k: launch.get(k) for k in ("executor", "queue", "account", "nodes", "duration", "plugins")},
                 "state": SUBMITTING, "launched_at": timezone.now().isoformat(),
                 "launched_by": actor.get_username() if actor is not None else ""},
        )
        EdgeGrant.objects.bulk_create([
            EdgeGrant(edge=child, user_id=g.user_id, group_id=g.group_id, role=g.role, created_by=actor)
            for g in EdgeGrant.objects.filter(edge=parent)
        ])
        plaintext, prefix, digest = token_generate(EDGE_TOKEN_PREFIX)
        EdgeToken.objects.create(edge=child, prefix=prefix, digest=digest, created_by=actor, expires_at=expires,
                                 note=f"child edge of {parent.name}")
        action_record(actor=actor, action=ActionRecord.Action.CHILD_EDGE_LAUNCHED, edge=parent.name, target=name,
                      detail={"token": f"{prefix}…", **child.job})
    broadcast.broadcast(broadcast.invalidation("edge", name))
    return child, plaintext


# The launch answer and the job's events both update a child's ``job``: one at a time (the
# lock within a process, the row lock across processes on PostgreSQL), so neither loses
# what the other wrote.
_job_lock = threading.Lock()


def _job_update(child_pk: int, change: Callable[[Edge, dict[str, Any]], dict[str, Any] | None]) -> Edge:
    with _job_lock, transaction.atomic():
        child = Edge.objects.select_for_update().get(pk=child_pk)
        job = change(child, dict(child.job))
        if job is not None:
            child.job = job
            Edge.objects.filter(pk=child_pk).update(job=job)
    broadcast.broadcast(broadcast.invalidation("edge", child.name))
    return child


def _job_started(child: Edge, job: dict[str, Any], walltime: Any = None) -> None:
    """The child's job runs: when it ends, and its token's expiry pulled in to match."""
    if job.get("ends_at"):
        return
    now = timezone.now()
    job["started_at"] = now.isoformat()
    seconds = walltime if isinstance(walltime, (int, float)) and not isinstance(walltime, bool) else job.get("duration")
    if isinstance(seconds, (int, float)) and seconds > 0:
        job["ends_at"] = (now + timedelta(seconds=seconds)).isoformat()
        EdgeToken.objects.filter(edge=child, revoked_at__isnull=True).update(
            expires_at=now + timedelta(seconds=seconds + edge_settings.CHILD_TOKEN_MARGIN))


def child_edge_launched(*, child: Edge, answer: dict[str, Any]) -> Edge:
    """Record what the parent answered to ``launch`` (its psij job). The job's own events
    may have been followed already: a state they recorded is kept."""

    def change(row: Edge, job: dict[str, Any]) -> dict[str, Any]:
        for key in ("job_id", "native_id", "executor"):
            if isinstance(answer.get(key), str):
                job[key] = answer[key]
        if job.get("state") == SUBMITTING:
            state = answer.get("state")
            job["state"] = state if isinstance(state, str) and state not in ("NEW", "") else PENDING
            if job["state"] == "ACTIVE":
                _job_started(row, job)
        return job

    return _job_update(child.pk, change)


def child_edge_discard(*, child: Edge) -> None:
    """Forget a child whose launch failed (nothing was submitted)."""
    name = child.name
    child.delete()
    broadcast.broadcast(broadcast.invalidation("edge", name))


def child_edge_end(*, child: Edge, state: str, detail: str = "", actor: Any = None, record: bool = False) -> bool:
    """The child's allocation is over: mark it ended with its job's ``state``, revoke its
    tokens and disconnect its agent. Returns whether anything changed."""
    now = timezone.now()
    changed = False
    with _job_lock, transaction.atomic():
        child = Edge.objects.select_for_update().get(pk=child.pk)
        if not child.job.get("ended"):
            child.job = {**child.job, "state": state, "ended": True, "ended_at": now.isoformat(),
                         **({"detail": detail} if detail else {})}
            child.save(update_fields=["job"])
            changed = True
        tokens = list(EdgeToken.objects.filter(edge=child, revoked_at__isnull=True))
        EdgeToken.objects.filter(pk__in=[t.pk for t in tokens]).update(revoked_at=now)
        if record:
            action_record(actor=actor, action=ActionRecord.Action.CHILD_EDGE_STOPPED, edge=child.parent.name
                          if child.parent_id else "", target=child.name, detail={"state": state})
    if child.channel_name and child.status == Edge.Status.ONLINE:
        _edge_send_sync(child.channel_name, messages.edge_kick(
            protocol.BYE_ALLOCATION_ENDED, detail or f"the batch job of edge '{child.name}' ended ({state})",
            retry=False))
    broadcast.broadcast(broadcast.invalidation("edge", child.name))
    return changed or bool(tokens)


def child_edge_ended_by_agent(*, edge_id: int) -> bool:
    """A child's agent said ``bye`` with ``allocation_ended`` (its walltime is near, or its
    job was cancelled): it will not come back. Other edges' byes change nothing."""
    child = Edge.objects.filter(pk=edge_id, parent__isnull=False).select_related("parent").first()
    if child is None:
        return False
    return child_edge_end(child=child, state=child.job.get("state") or "ACTIVE",
                          detail=f"edge '{child.name}' ended with its allocation")


def child_edge_job_changed(*, parent_name: str, job_id: str, state: str, walltime: Any = None) -> Edge | None:
    """The parent's psij job ``job_id`` changed ``state``. If it is a child's job: ACTIVE
    pulls the token's expiry in to the walltime plus CHILD_TOKEN_MARGIN; a final state
    ends the child. Returns the child, if any."""
    child = Edge.objects.filter(parent__name=parent_name, job__job_id=job_id).first()
    if child is None:
        return None
    if state in FINAL_STATES:
        child_edge_end(child=child, state=state)
        return child

    def change(row: Edge, job: dict[str, Any]) -> dict[str, Any] | None:
        if job.get("ended") or _RANK.get(state, 0) < _RANK.get(job.get("state"), 0):
            return None  # ended, or a late event of an earlier state
        job["state"] = state
        if state == "ACTIVE":
            _job_started(row, job, walltime)
        return job

    return _job_update(child.pk, change)


def principal_for(user: Any, token: Any = None) -> Principal:
    """The proxy's view of a DRF caller, for calls the bridge makes on their behalf."""
    scope = getattr(token, "scope", "full") if token is not None else "full"
    return Principal(user_id=user.pk, username=user.get_username(), is_superuser=user.is_superuser,
                     scope=scope, token_id=getattr(token, "pk", None),
                     group_ids=frozenset(user.groups.values_list("pk", flat=True)))


async def child_edge_launch_on_parent(*, principal: Principal, parent: str, body: dict[str, Any]) -> dict[str, Any]:
    """Call the parent's ``edges/launch`` as ``principal``; raises :class:`LaunchFailed`."""
    from ..mcp.calls import Caller, PluginError, plugin_call

    try:
        answer = await plugin_call(Caller(principal, "child edge launch"), parent, "edges", "POST", "launch",
                                   body=body, timeout=120.0)
    except PluginError as exc:
        raise LaunchFailed(exc.status, exc.error, exc.detail) from None
    if not isinstance(answer, dict):
        raise LaunchFailed(502, "bad_answer", f"edge '{parent}' answered launch with {type(answer).__name__}")
    return answer


async def child_edge_stop_on_parent(*, principal: Principal, parent: str, child: str) -> dict[str, Any] | None:
    """Ask the parent to cancel the child's job; None if the parent could not (offline)."""
    from ..mcp.calls import Caller, PluginError, plugin_call

    try:
        answer = await plugin_call(Caller(principal, "child edge stop"), parent, "edges", "POST", f"stop/{child}",
                                   body={}, timeout=60.0)
    except PluginError as exc:
        log.warning("could not stop child edge %s through %s: %s", child, parent, exc)
        return None
    return answer if isinstance(answer, dict) else None


# -- the two things users do: launch and stop --------------------------------------------------


def child_edge_launch(*, parent: Edge, user: Any, token: Any = None, launch: dict[str, Any]) -> Edge:
    """Create a child of ``parent`` and have the parent submit its job (called from
    synchronous views: the REST API and the portal). ``launch`` holds the validated fields
    of ``ChildLaunchSerializer``. Raises ValidationError (bad name, taken) or
    :class:`LaunchFailed` (the parent is offline or refused); nothing is left behind then."""
    from asgiref.sync import async_to_sync

    launch = dict(launch)
    if launch.get("bye_margin") is None:
        launch["bye_margin"] = min(edge_settings.CHILD_BYE_MARGIN, float(launch["duration"]) / 4)
    if not parent.is_online:
        raise LaunchFailed(503, "edge_offline", f"edge '{parent.name}' is not connected: it submits the child's job")
    child, plaintext = child_edge_create(parent=parent, actor=user, suffix=launch.pop("name", None), launch=launch)
    body = {k: v for k, v in launch.items() if v not in (None, "", [], {})}
    body.update(name=child.name, token=plaintext, nodes=launch.get("nodes", 1), duration=launch["duration"])
    try:
        answer = async_to_sync(child_edge_launch_on_parent)(principal=principal_for(user, token),
                                                            parent=parent.name, body=body)
    except LaunchFailed:
        child_edge_discard(child=child)
        raise
    return child_edge_launched(child=child, answer=answer)


def child_edge_stop(*, child: Edge, user: Any, token: Any = None) -> Edge:
    """Cancel the child's job through its parent and revoke its token at once (also when
    the parent cannot be reached: the job then ends at its walltime, its agent refused)."""
    from asgiref.sync import async_to_sync

    if not child.ended:
        answer = None
        if child.parent is not None and child.parent.is_online:
            answer = async_to_sync(child_edge_stop_on_parent)(principal=principal_for(user, token),
                                                              parent=child.parent.name, child=child.name)
        state = (answer or {}).get("state")
        child_edge_end(child=child, state=state if state in FINAL_STATES else "CANCELED", actor=user, record=True,
                       detail=f"edge '{child.name}' was stopped by {user.get_username()}")
        child.refresh_from_db()
    return child


# -- following the parents' psij events -----------------------------------------------------

JOB_NAME_PREFIX = "edge-"
_FOLLOWED_STATES = frozenset({"QUEUED", "ACTIVE", *FINAL_STATES})
_tasks: set = set()
_last_task: Any = None


def child_job_event(edge_name: str, frame: dict[str, Any]) -> None:
    """Look at an ``event`` frame from ``edge_name``: a psij job state change that may be
    a child's is followed up off the event loop. Cheap for every other event."""
    if frame.get("plugin") != "psij" or frame.get("topic") != "job_status":
        return
    data = frame.get("data")
    if not isinstance(data, dict) or data.get("state") not in _FOLLOWED_STATES:
        return
    job_id, name = data.get("job_id"), data.get("name")
    if not isinstance(job_id, str) or not (isinstance(name, str) and name.startswith(JOB_NAME_PREFIX)):
        return
    import asyncio

    from channels.db import database_sync_to_async

    global _last_task
    follow = database_sync_to_async(_follow, thread_sensitive=False)
    previous = _last_task

    async def in_order() -> None:
        # One after the other, in the order the events came: a job's QUEUED and ACTIVE come
        # within milliseconds of each other, and must not be applied the other way round.
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        await follow(edge_name, job_id, name[len(JOB_NAME_PREFIX):], data["state"], data.get("walltime"))

    task = _last_task = asyncio.get_running_loop().create_task(in_order())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _follow(parent_name: str, job_id: str, child_name: str, state: str, walltime: Any) -> None:
    try:
        if child_edge_job_changed(parent_name=parent_name, job_id=job_id, state=state, walltime=walltime):
            return
        # The event may come before the parent's launch answer was recorded: the child is
        # then found by its job's name, while it has no job id yet.
        child = Edge.objects.filter(parent__name=parent_name, name=child_name).first()
        if child is not None and child.job.get("job_id") in (None, "", job_id):
            _job_update(child.pk, lambda row, job: {**job, "job_id": job.get("job_id") or job_id})
            child_edge_job_changed(parent_name=parent_name, job_id=job_id, state=state, walltime=walltime)
    except Exception:
        log.exception("could not follow job %s of edge %s", job_id, parent_name)
