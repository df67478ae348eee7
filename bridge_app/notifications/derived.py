"""Derived events: what no agent says but people want to be told, emitted by the bridge as
``bridge/<topic>`` notifications of the edge (seen, like every notification without an
owner, by the edge's owner and site admins), each once per occurrence.

* ``edge_offline_long``: an edge offline for more than NOTIFY_EDGE_OFFLINE_MINUTES; one per
  disconnection (the occurrence is the edge and its disconnection time).
* ``job_walltime_near``: a psij job that will reach its walltime within
  NOTIFY_WALLTIME_MINUTES (psij's ACTIVE event carries ``walltime``; the matcher, which sees
  every event once, keeps a ``WalltimeWatch`` until the job ends); owned by the job's owner,
  so they see it too.
* ``allocation_low``: an account of the edge's batch scheduler with less than
  NOTIFY_ALLOCATION_PERCENT of its allocation left, from queue_info's ``usage`` events (a
  budget summary the agent emits every ``queue_info.budget_watch`` seconds); one per
  account, period and limit (a raised limit that is spent again is a new occurrence).

The check runs in every process's worker; an ``Occurrence`` row, inserted in the same
transaction as the event, makes it once across processes and restarts.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..conf import edge_settings
from ..models import Edge
from ..streams import events
from .models import Occurrence, WalltimeWatch

PLUGIN = "bridge"
EDGE_OFFLINE_LONG = "edge_offline_long"
JOB_WALLTIME_NEAR = "job_walltime_near"
ALLOCATION_LOW = "allocation_low"
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELED")
# Disconnections older than this are history, not news (e.g. when the feature is first on).
LOOKBACK = timedelta(days=1)


def _emit_once(key: str, row: events.Row) -> list[dict[str, Any]]:
    try:
        with transaction.atomic():
            Occurrence.objects.create(key=key[:200])
            return events._write([row])  # (the private writer: one event, in this transaction)
    except IntegrityError:
        return []  # emitted already (here or by another process)


def edges_offline_long_emit() -> list[dict[str, Any]]:
    """Emit ``edge_offline_long`` for edges offline past the threshold; returns the written
    events (for publishing)."""
    minutes = edge_settings.NOTIFY_EDGE_OFFLINE_MINUTES
    if minutes <= 0:
        return []
    now = timezone.now()
    cutoff = now - timedelta(minutes=minutes)
    rows = (Edge.objects.filter(status=Edge.Status.OFFLINE, disconnected_at__lte=cutoff,
                                disconnected_at__gte=cutoff - LOOKBACK).values_list("name", "disconnected_at"))
    written = []
    for name, since in rows:
        data = {"minutes": minutes, "offline_since": since.timestamp(),
                "message": f"edge {name} has been offline for more than {minutes:g} minutes"}
        written += _emit_once(f"{EDGE_OFFLINE_LONG}:{name}:{since.timestamp()}",
                              (events.NOTIFICATION, name, PLUGIN, EDGE_OFFLINE_LONG, None, data, time.time()))
    return written


def walltime_watch_update(records: list[Any]) -> None:
    """Follow psij jobs' walltimes through their ``job_status`` events (called by the
    matcher, in its transaction, with each batch of events in id order)."""
    if edge_settings.NOTIFY_WALLTIME_MINUTES <= 0:
        return
    for record in records:
        if record.plugin != "psij" or record.topic != "job_status" or not isinstance(record.data, dict):
            continue
        job_id, state = record.data.get("job_id"), record.data.get("state")
        if not isinstance(job_id, str):
            continue
        walltime = record.data.get("walltime")
        if state == "ACTIVE" and isinstance(walltime, (int, float)) and not isinstance(walltime, bool) and walltime > 0:
            WalltimeWatch.objects.update_or_create(
                edge=record.edge, job_id=job_id[:100],
                defaults={"owner_uid": record.owner_uid, "deadline": record.at + timedelta(seconds=walltime)})
        elif state in FINAL_STATES:
            WalltimeWatch.objects.filter(edge=record.edge, job_id=job_id[:100]).delete()


def jobs_walltime_near_emit() -> list[dict[str, Any]]:
    """Emit ``job_walltime_near`` for watched jobs whose walltime is within the warning time."""
    minutes = edge_settings.NOTIFY_WALLTIME_MINUTES
    if minutes <= 0:
        return []
    now = timezone.now()
    written = []
    for watch in WalltimeWatch.objects.filter(deadline__lte=now + timedelta(minutes=minutes)):
        left = max(0.0, (watch.deadline - now).total_seconds())
        data = {"job_id": watch.job_id, "deadline": watch.deadline.timestamp(), "seconds_left": round(left),
                "message": f"job {watch.job_id} reaches its walltime in {left / 60:.0f} minutes"}
        written += _emit_once(f"{JOB_WALLTIME_NEAR}:{watch.edge}:{watch.job_id}:{watch.deadline.timestamp()}",
                              (events.NOTIFICATION, watch.edge, PLUGIN, JOB_WALLTIME_NEAR, watch.owner_uid, data,
                               time.time()))
        WalltimeWatch.objects.filter(pk=watch.pk, deadline=watch.deadline).delete()
    return written


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def allocations_low(records: list[Any]) -> list[tuple[str, events.Row]]:
    """The ``allocation_low`` events that queue_info's ``usage`` events among ``records``
    call for, as (occurrence key, row) for :func:`allocations_low_emit` (called by the
    matcher, which sees every event once; emitted after its transaction)."""
    percent = edge_settings.NOTIFY_ALLOCATION_PERCENT
    if percent <= 0:
        return []
    due = []
    for record in records:
        if record.plugin != "queue_info" or record.topic != "usage" or not isinstance(record.data, dict):
            continue
        accounts = record.data.get("accounts")
        for one in accounts if isinstance(accounts, list) else []:
            if not isinstance(one, dict) or not isinstance(one.get("account"), str):
                continue
            limit, remaining = _number(one.get("limit")), _number(one.get("remaining"))
            if limit is None or remaining is None or limit <= 0:
                continue
            left = 100 * remaining / limit
            if left >= percent:
                continue
            account, unit = one["account"], str(one.get("unit") or "core-hours")
            period = str(one.get("period_start") or "")
            data = {"account": account, "percent_remaining": round(left, 2), "threshold_percent": percent,
                    "remaining": remaining, "limit": limit, "used": _number(one.get("used")), "unit": unit,
                    "period_start": one.get("period_start"), "period_end": one.get("period_end"),
                    "message": f"allocation {account} on {record.edge} has {left:.1f}% left "
                               f"({remaining:,.1f} of {limit:,.1f} {unit}), below {percent:g}%"}
            row = (events.NOTIFICATION, record.edge, PLUGIN, ALLOCATION_LOW, record.owner_uid, data, time.time())
            due.append((f"{ALLOCATION_LOW}:{record.edge}:{account}:{period}:{limit:g}"[:200], row))
    return due


def allocations_low_emit(due: list[tuple[str, events.Row]]) -> list[dict[str, Any]]:
    """Emit what :func:`allocations_low` found, each once."""
    written = []
    for key, row in due:
        written += _emit_once(key, row)
    return written


def derived_emit() -> list[dict[str, Any]]:
    """Every derived event due now."""
    return edges_offline_long_emit() + jobs_walltime_near_emit()
