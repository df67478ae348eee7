"""The delivery worker: one per bridge process (or ``manage.py notify_worker``).

Matching. Events above the cursor are matched against active subscriptions; the
deliveries found are inserted, and the cursor advanced, in one transaction. On PostgreSQL
the cursor row is claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` (a process finding it
taken leaves the pass to its holder); the unique (subscription, event) constraint makes a
repeated pass harmless anyway. Ids are committed in id order (``events.py``), so the
cursor never passes an event that is not yet visible.

Dispatching. A subscription's deliveries are sent by whichever process holds its lease (a
conditional UPDATE, so at most one process takes it; a process that dies leaves it to
expire), in event order; a delivery is marked delivered by the process that sent it. Each
subscription is its own task, at most NOTIFY_CONCURRENCY at once, so a slow or dead target
holds up only its own subscription. A failure is retried with exponential backoff and
jitter (the subscription's later events wait: order is kept) for NOTIFY_RETRY_FOR seconds,
then dead-lettered with its last error, and the next event goes. E-mail subscriptions send
what collected over NOTIFY_EMAIL_BATCH_SECONDS as one mail.

The worker is woken when this process writes events (``events.written_observers``) and
looks every NOTIFY_POLL_INTERVAL for what other processes left (their events, retries,
expired leases).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from datetime import timedelta
from typing import Any, cast

import httpx
from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection, transaction
from django.db.models import Exists, Max, Min, OuterRef, Q
from django.utils import timezone

from edge_agent.backoff import backoff_delay

from ..conf import edge_settings
from ..streams.events import TOPOLOGY
from . import derived, filters, targets
from .models import Delivery, NotifyCursor, Subscription

log = logging.getLogger(__name__)

PROCESS_ID = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
MATCH_BATCH = 500
SEND_BATCH = 50
# Deliveries sent before they are marked delivered together (see Worker._deliver_due).
MARK_EVERY = 25


def _lease_seconds() -> float:
    # Renewed every third of it, before an attempt: it must outlast one attempt.
    return max(edge_settings.NOTIFY_LEASE_SECONDS, 2 * edge_settings.NOTIFY_WEBHOOK_TIMEOUT)


def event_dict(record: Any) -> dict[str, Any]:
    """An event as webhooks and e-mails carry it (the /events data, with its ``kind``)."""
    ts = record.at.timestamp()
    if record.kind == TOPOLOGY:
        data = record.data if isinstance(record.data, dict) else {}
        return {"id": record.pk, "kind": TOPOLOGY, "edge": record.edge, **data, "ts": ts}
    return {"id": record.pk, "kind": record.kind, "edge": record.edge, "plugin": record.plugin, "topic": record.topic,
            "data": record.data, "ts": ts}


def _db(fn):
    """Run ``fn`` in a worker thread with fresh connections (not thread-sensitive: the
    consumers' single executor must not queue behind deliveries)."""
    def wrapped(*args, **kwargs):
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()
    return sync_to_async(wrapped, thread_sensitive=False)


# -- matching ---------------------------------------------------------------------------------


def match_once(batch: int = MATCH_BATCH, *, written: list[dict[str, Any]] | None = None) -> int:
    """One matching pass over at most ``batch`` events; returns how many events it handled
    (``batch`` means there may be more). Derived events that the pass calls for are
    emitted after its transaction and appended to ``written`` (for publishing)."""
    from ..models import EventRecord

    if not NotifyCursor.objects.filter(pk=1).exists():
        start = Subscription.objects.filter(active=True).aggregate(m=Min("start_after"))["m"]
        if start is None:
            start = EventRecord.objects.aggregate(m=Max("id"))["m"] or 0
        NotifyCursor.objects.get_or_create(pk=1, defaults={"last_event_id": start})
    with transaction.atomic():
        cursors = NotifyCursor.objects.filter(pk=1)
        if connection.vendor == "postgresql":
            cursors = cursors.select_for_update(skip_locked=True)
        cursor = cursors.first()
        if cursor is None:
            return 0  # another process is matching these events
        now = timezone.now()
        Subscription.objects.filter(active=True, expires_at__lte=now).update(active=False)
        subs = list(Subscription.objects.filter(active=True).exclude(target=Subscription.Target.BROWSER)
                    .select_related("user"))
        if not subs:
            top = EventRecord.objects.aggregate(m=Max("id"))["m"] or 0
            if top > cursor.last_event_id:
                cursor.last_event_id = top
                cursor.save(update_fields=["last_event_id"])
            return 0
        events = list(EventRecord.objects.filter(id__gt=cursor.last_event_id).order_by("id")[:batch])
        if not events:
            return 0
        derived.walltime_watch_update(events)
        low = derived.allocations_low(events)
        roles = filters.RoleCache()
        rows = []
        for event in events:
            for sub in subs:
                if event.pk <= sub.start_after:
                    continue
                if not filters.wants(sub, kind=event.kind, edge=event.edge, plugin=event.plugin, topic=event.topic,
                                     data=event.data):
                    continue
                if not roles.visible(sub.user, kind=event.kind, edge=event.edge, owner_uid=event.owner_uid):
                    continue
                rows.append(Delivery(subscription=sub, event_id=event.pk))
        if rows:
            Delivery.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
        cursor.last_event_id = events[-1].pk
        cursor.save(update_fields=["last_event_id"])
    # After the commit: a crash in between loses this one, and the next usage event (still
    # below the threshold) emits it.
    emitted = derived.allocations_low_emit(low) if low else []
    if written is not None:
        written += emitted
    return len(events)


def match_all(*, written: list[dict[str, Any]] | None = None) -> int:
    total = 0
    while True:
        n = match_once(written=written)
        total += n
        if n < MATCH_BATCH:
            return total


# -- leases -----------------------------------------------------------------------------------


def due_subscriptions(*, exclude: set[int], limit: int) -> list[int]:
    """Subscriptions with deliveries due, not leased by another process."""
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=PROCESS_ID)
    # From the subscriptions' side, so that any number of them waiting out a dead target's
    # backoff cannot hide one that is due.
    owed = Delivery.objects.filter(subscription=OuterRef("pk"), status=Delivery.Status.PENDING)
    return list(Subscription.objects.filter(active=True).filter(free)
                .filter(Q(retry_at__isnull=True) | Q(retry_at__lte=now)).filter(Exists(owed))
                .exclude(pk__in=exclude).order_by("retry_at", "pk").values_list("pk", flat=True)[:limit])


def lease_take(sub_id: int) -> bool:
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=PROCESS_ID)
    return Subscription.objects.filter(pk=sub_id).filter(free).update(
        lease_owner=PROCESS_ID, lease_until=now + timedelta(seconds=_lease_seconds())) == 1


def lease_release(sub_id: int, *, retry_at: Any = None) -> None:
    Subscription.objects.filter(pk=sub_id, lease_owner=PROCESS_ID).update(lease_owner="", lease_until=None,
                                                                          retry_at=retry_at)


def leases_release_all() -> int:
    return Subscription.objects.filter(lease_owner=PROCESS_ID).update(lease_owner="", lease_until=None)


# -- one subscription's deliveries ------------------------------------------------------------


def backoff(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: exponential, capped, with jitter."""
    return backoff_delay(attempts - 1, base=edge_settings.NOTIFY_RETRY_BASE,
                         cap=edge_settings.NOTIFY_RETRY_MAX_DELAY, jitter=(0.5, 1.0))


def _pending(sub_id: int, limit: int) -> tuple[Subscription | None, list[tuple[Delivery, dict | None, bool]]]:
    """The subscription and its next pending deliveries, each with its event (None if
    pruned) and whether the user may (still) see it."""
    from ..models import EventRecord

    sub = Subscription.objects.select_related("user").filter(pk=sub_id, active=True).first()
    if sub is None:
        return None, []
    batch = list(Delivery.objects.filter(subscription=sub, status=Delivery.Status.PENDING).order_by("event_id")[:limit])
    records = {r.pk: r for r in EventRecord.objects.filter(pk__in=[d.event_id for d in batch])}
    roles = filters.RoleCache()
    out: list[tuple[Delivery, dict[Any, Any] | None, bool]] = []
    for d in batch:
        record = records.get(d.event_id)
        if record is None:
            out.append((d, None, False))
            continue
        visible = roles.visible(sub.user, kind=record.kind, edge=record.edge, owner_uid=record.owner_uid)
        out.append((d, event_dict(record), visible))
    return sub, out


def _mark(ids: list[int], status: str, error: str = "") -> None:
    now = timezone.now()
    fields: dict[str, Any] = {"status": status, "last_error": error[:500]}
    if status == Delivery.Status.DELIVERED:
        fields["delivered_at"] = now
    Delivery.objects.filter(pk__in=ids, status=Delivery.Status.PENDING).update(**fields)


def _delivered(sub: Subscription, ids: list[int]) -> None:
    """Mark deliveries sent and note the time on the subscription."""
    _mark(ids, Delivery.Status.DELIVERED)
    Subscription.objects.filter(pk=sub.pk).update(last_delivered_at=timezone.now(), last_error="")


def _noted(sub_id: int) -> None:
    Subscription.objects.filter(pk=sub_id).update(last_delivered_at=timezone.now(), last_error="")


def _failed(sub: Subscription, deliveries: list[Delivery], error: str) -> Any:
    """Record a failed attempt; returns when to try again (None: dead-lettered, go on)."""
    now = timezone.now()
    head = deliveries[0]
    attempts = head.attempts + 1
    with transaction.atomic():
        Subscription.objects.filter(pk=sub.pk).update(last_error=error[:500])
        if (now - head.created_at).total_seconds() >= edge_settings.NOTIFY_RETRY_FOR:
            Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status=Delivery.Status.PENDING).update(
                status=Delivery.Status.DEAD, attempts=attempts, last_error=error[:500], next_attempt_at=None)
            log.warning("subscription %s: dead-lettered %d deliveries after %d attempts: %s", sub.pk, len(deliveries),
                        attempts, error)
            return None
        retry = now + timedelta(seconds=backoff(attempts))
        Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status=Delivery.Status.PENDING).update(
            attempts=attempts, last_error=error[:500], next_attempt_at=retry)
        return retry


class Buckets:
    """Token buckets (per user, per target host) in this process."""

    def __init__(self) -> None:
        self._buckets: dict[Any, list[float]] = {}

    async def take(self, key: Any, rate: float) -> None:
        if rate <= 0:
            return
        while True:
            now = time.monotonic()
            bucket = self._buckets.setdefault(key, [rate, now])
            bucket[0] = min(rate, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if bucket[0] >= 1:
                bucket[0] -= 1
                return
            await asyncio.sleep((1 - bucket[0]) / rate)


class Clients:
    """One HTTP client per subscription, the most recently used kept open.

    A subscription's deliveries go one at a time, so its client holds one keep-alive
    connection. One client shared by every subscription would hold them all in one pool,
    and httpx checks each pooled connection on every request: with a hundred subscribers
    that check costs more than the request. The TLS context is made once and shared."""

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self._clients: OrderedDict[int, httpx.AsyncClient] = OrderedDict()
        self._ssl = httpx.create_ssl_context()
        self._closing: set[asyncio.Task] = set()

    def get(self, sub_id: int) -> httpx.AsyncClient:
        client = self._clients.pop(sub_id, None)
        if client is None:
            client = httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=self._ssl,
                                       limits=httpx.Limits(max_connections=2, max_keepalive_connections=1))
        self._clients[sub_id] = client
        while len(self._clients) > self.keep:
            _, old = self._clients.popitem(last=False)
            task = asyncio.get_running_loop().create_task(old.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        await asyncio.gather(*(c.aclose() for c in clients), *self._closing, return_exceptions=True)


class Worker:
    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.tasks: dict[int, asyncio.Task] = {}
        self.buckets = Buckets()
        self.clients: Clients | None = None
        self.delivered = 0
        self._derived_at = 0.0

    def poke(self, events: Any = None) -> None:
        self.wake.set()

    async def run(self) -> None:
        self.clients = Clients(keep=max(64, 4 * edge_settings.NOTIFY_CONCURRENCY))
        failures = 0
        try:
            while True:
                try:
                    await asyncio.wait_for(self.wake.wait(), edge_settings.NOTIFY_POLL_INTERVAL)
                except asyncio.TimeoutError:
                    pass
                self.wake.clear()
                try:
                    await self.step()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception:
                    failures += 1
                    log.warning("notification worker pass failed", exc_info=failures == 1)
                    await asyncio.sleep(backoff_delay(failures, base=0.5, cap=5.0))
        finally:
            await self.clients.aclose()

    async def step(self) -> None:
        from ..streams import events

        if time.monotonic() - self._derived_at >= edge_settings.NOTIFY_DERIVED_INTERVAL:
            self._derived_at = time.monotonic()
            written = await _db(derived.derived_emit)()
            if written:
                await events.publish(written)
        derived_written: list[dict[str, Any]] = []
        await _db(match_all)(written=derived_written)
        if derived_written:
            await events.publish(derived_written)
        room = edge_settings.NOTIFY_CONCURRENCY - len(self.tasks)
        if room <= 0:
            return
        for sub_id in await _db(due_subscriptions)(exclude=set(self.tasks), limit=room):
            task = asyncio.get_running_loop().create_task(self._serve(sub_id), name=f"notify-{sub_id}")
            self.tasks[sub_id] = task
            # mypy cannot infer a lambda whose argument is bound by a default.
            task.add_done_callback(lambda t, s=sub_id: self._done(s, t))  # type: ignore[misc]

    def _done(self, sub_id: int, task: asyncio.Task) -> None:
        self.tasks.pop(sub_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("delivering subscription %s failed", sub_id, exc_info=task.exception())
        self.wake.set()

    async def _serve(self, sub_id: int) -> None:
        if not await _db(lease_take)(sub_id):
            return
        retry_at = None
        try:
            retry_at = await self._deliver(sub_id)
        finally:
            await _db(lease_release)(sub_id, retry_at=retry_at)
        if retry_at is not None:  # look again then, not at the next poll
            delay = max(0.0, (retry_at - timezone.now()).total_seconds())
            asyncio.get_running_loop().call_later(delay + 0.01, self.wake.set)

    async def _deliver(self, sub_id: int) -> Any:
        """Send what is due; returns when to look again (None: when new deliveries come)."""
        sent = [0]
        try:
            return await self._deliver_due(sub_id, sent)
        finally:
            if sent[0]:
                await _db(_noted)(sub_id)

    async def _deliver_due(self, sub_id: int, sent: list[int]) -> Any:
        renewed = time.monotonic()
        # Sent but not yet marked: marked together (one UPDATE per MARK_EVERY deliveries or
        # batch) before anything else is recorded, so a crash repeats at most those (each
        # carries its idempotency key, and receivers see at-least-once anyway).
        done: list[int] = []
        try:
            while True:
                sub, batch = await _db(_pending)(sub_id, SEND_BATCH)
                if sub is None or not batch:
                    return None
                if sub.target == Subscription.Target.EMAIL:
                    return await self._email(sub)
                host = _host(sub.url)
                for delivery, event, visible in batch:
                    if delivery.next_attempt_at is not None and delivery.next_attempt_at > timezone.now():
                        return delivery.next_attempt_at
                    if event is None or not visible:
                        await self._flush(done)
                        await _db(_mark)([delivery.pk], Delivery.Status.SKIPPED,
                                         "the event was pruned" if event is None else "no longer visible to you")
                        continue
                    if time.monotonic() - renewed > _lease_seconds() / 3:
                        # Slow targets: keep the lease well ahead of the attempts (or give up).
                        await self._flush(done)
                        if not await _db(lease_take)(sub_id):
                            return None
                        renewed = time.monotonic()
                    await self.buckets.take(("user", sub.user_id), edge_settings.NOTIFY_USER_RATE)
                    await self.buckets.take(("host", host), edge_settings.NOTIFY_TARGET_RATE)
                    client = cast(Clients, self.clients).get(sub.pk)  # set by run() before any _serve
                    outcome = await targets.webhook_post(client, url=sub.url, secret=sub.secret, sub_id=sub.pk,
                                                         event=event)
                    if outcome.ok:
                        done.append(delivery.pk)
                        self.delivered += 1
                        sent[0] += 1
                        if len(done) >= MARK_EVERY:
                            await self._flush(done)
                        continue
                    await self._flush(done)
                    retry = await _db(_failed)(sub, [delivery], outcome.error)
                    if retry is not None:
                        return retry
                await self._flush(done)
                if not await _db(lease_take)(sub_id):  # renew for the next batch
                    return None
                renewed = time.monotonic()
        finally:
            if done:
                await asyncio.shield(self._flush(done))

    @staticmethod
    async def _flush(done: list[int]) -> None:
        """Mark the deliveries in ``done`` delivered (and empty it)."""
        if done:
            ids = list(done)
            done.clear()
            await _db(_mark)(ids, Delivery.Status.DELIVERED)

    async def _email(self, sub: Subscription) -> Any:
        return await _db(email_batch_send)(sub.pk)


def _host(url: str) -> str:
    try:
        return targets.url_check(url)[1]
    except targets.TargetRefused:
        return ""


def email_batch_send(sub_id: int) -> Any:
    """Send the pending e-mail deliveries of a subscription as one mail once its batch is
    complete (NOTIFY_EMAIL_BATCH_SECONDS after the oldest, or NOTIFY_EMAIL_MAX_EVENTS);
    returns when to look again (None: nothing pending)."""
    from .services import unsubscribe_token

    limit = max(1, edge_settings.NOTIFY_EMAIL_MAX_EVENTS)
    sub, batch = _pending(sub_id, limit)
    if sub is None or not batch:
        return None
    now = timezone.now()
    head = batch[0][0]
    if head.next_attempt_at is not None and head.next_attempt_at > now:
        return head.next_attempt_at
    ready_at = min(d.created_at for d, _, _ in batch) + timedelta(seconds=edge_settings.NOTIFY_EMAIL_BATCH_SECONDS)
    if len(batch) < limit and ready_at > now:
        return ready_at
    hidden = [d.pk for d, event, visible in batch if event is None or not visible]
    if hidden:
        # Without django-stubs mypy sees a TextChoices member as the tuple it is declared with.
        _mark(hidden, Delivery.Status.SKIPPED, "no longer visible to you")  # type: ignore[arg-type]
    sending = [(d, event) for d, event, visible in batch if event is not None and visible]
    if not sending:
        return now
    base = edge_settings.PUBLIC_URL.rstrip("/") or "http://localhost:8000"
    url = f"{base}/notifications/unsubscribe/{unsubscribe_token(sub)}/"
    message = targets.email_message(sub=sub, events=[e for _, e in sending], address=sub.destination(),
                                    unsubscribe_url=url)
    try:
        message.send(fail_silently=False)
    except Exception as exc:
        retry = _failed(sub, [d for d, _ in sending], f"{type(exc).__name__}: {exc}")
        return retry if retry is not None else now
    _delivered(sub, [d.pk for d, _ in sending])
    return now  # look again at once: more may be pending


# -- the process's worker -----------------------------------------------------------------------

_workers: dict[asyncio.AbstractEventLoop, tuple[Worker, asyncio.Task]] = {}


def worker_start() -> Worker | None:
    """Start this event loop's worker (idempotent), woken by the events this process writes."""
    from ..streams import events

    loop = asyncio.get_running_loop()
    if loop in _workers:
        return _workers[loop][0]
    worker = Worker()
    task = loop.create_task(worker.run(), name="notifications-worker")
    _workers[loop] = (worker, task)
    events.written_observers.append(worker.poke)
    return worker


async def worker_stop() -> None:
    """Stop this event loop's worker; its leases are released for other processes."""
    from ..streams import events

    entry = _workers.pop(asyncio.get_running_loop(), None)
    if entry is None:
        return
    worker, task = entry
    if worker.poke in events.written_observers:
        events.written_observers.remove(worker.poke)
    for sub_task in list(worker.tasks.values()):
        sub_task.cancel()
    task.cancel()
    await asyncio.gather(task, *worker.tasks.values(), return_exceptions=True)
    try:
        await _db(leases_release_all)()
    except Exception:
        log.warning("could not release notification leases", exc_info=True)
