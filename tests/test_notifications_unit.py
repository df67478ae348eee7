"""Notifications inside one process: signatures, the SSRF rules (at subscription time and
at connect time), matching with the events stream's visibility rule (checked again at
delivery time), e-mail batches, derived events once per occurrence, per-user limits."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.utils import timezone

from bridge_app.domain import services
from bridge_app.models import ActionRecord, Edge, EventRecord
from bridge_app.notifications import derived, signing, targets, worker
from bridge_app.notifications import services as notify
from bridge_app.notifications.models import Delivery, Subscription
from bridge_app.streams import events
from edge_agent.client import verify_signature

pytestmark = pytest.mark.django_db(transaction=True)

ALLOW = {**settings.RADICAL_EDGE, "NOTIFY_ALLOW_PRIVATE_TARGETS": True, "NOTIFY_ALLOW_HTTP": True,
         "NOTIFY_EMAIL_BATCH_SECONDS": 0, "NOTIFY_EMAIL_MAX_EVENTS": 100}


def test_signatures_verify_with_the_secret_only_and_expire():
    body = b'{"id":1}'
    header = signing.sign("whsec_a", body)
    assert signing.verify("whsec_a", body, header) and verify_signature("whsec_a", body, header)
    assert not signing.verify("whsec_b", body, header)
    assert not signing.verify("whsec_a", body + b" ", header)
    old = signing.sign("whsec_a", body, timestamp=1_000_000)
    assert not signing.verify("whsec_a", body, old) and not verify_signature("whsec_a", body, old)
    assert not signing.verify("whsec_a", body, "v1=abc") and not verify_signature("whsec_a", body, "garbage")


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1",
                                     "224.0.0.1", "240.0.0.1"])
def test_private_loopback_link_local_and_reserved_addresses_are_refused(address):
    assert not targets.address_allowed(address)
    with override_settings(RADICAL_EDGE=ALLOW):
        assert targets.address_allowed(address)


def test_public_addresses_are_allowed():
    assert targets.address_allowed("93.184.216.34") and targets.address_allowed("2606:2800:220:1::1")


def test_the_address_is_checked_again_at_connect_time(monkeypatch):
    """A name that resolved to a public address when subscribing and to loopback when sent
    (DNS rebinding) is refused, and nothing is sent."""
    targets._resolved.clear()
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))],
                    [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 443))]])
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: next(answers))
    targets.url_validate("https://hooks.example.org/x")  # accepted now

    sent = []

    async def send():
        transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200))
        async with httpx.AsyncClient(transport=transport) as client:
            return await targets.webhook_post(client, url="https://hooks.example.org/x", secret="s", sub_id=1,
                                              event={"id": 1})

    outcome = asyncio.run(send())
    assert not outcome.ok and outcome.error.startswith("refused") and "127.0.0.1" in outcome.error
    assert sent == []


def test_the_connection_goes_to_the_checked_address_with_the_name_in_host_and_sni(monkeypatch):
    targets._resolved.clear()
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))])
    sent = []

    async def send():
        transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(204))
        async with httpx.AsyncClient(transport=transport) as client:
            return await targets.webhook_post(client, url="https://hooks.example.org/x?a=1", secret="whsec_s",
                                              sub_id=7, event={"id": 42, "kind": "notification"})

    assert asyncio.run(send()).ok
    [request] = sent
    assert request.url.host == "93.184.216.34" and request.url.path == "/x" and request.url.query == b"a=1"
    assert request.headers["host"] == "hooks.example.org"
    assert request.extensions["sni_hostname"] == "hooks.example.org"
    assert signing.verify("whsec_s", request.content, request.headers["radical-signature"])
    assert request.headers["idempotency-key"] == "42"


@pytest.fixture
def people():
    User = get_user_model()
    owner = User.objects.create_user("owner", email="owner@example.org")
    member = User.objects.create_user("member", email="member@example.org")
    stranger = User.objects.create_user("stranger", email="stranger@example.org")
    edge = Edge.objects.create(name="hpc1", owner=owner)
    services.grant_set(edge=edge, role="user", user=member, actor=owner)
    return owner, member, stranger, edge


def _event(kind, *, owner=None, data=None, topic="job_status", plugin="psij"):
    if kind == events.TOPOLOGY:
        row = (events.TOPOLOGY, "hpc1", "", "", None, {"online": False}, 1.0)
    else:
        row = (events.NOTIFICATION, "hpc1", plugin, topic, owner, data or {"job_id": "j1", "state": "COMPLETED"}, 1.0)
    return events._write([row])[0]["id"]


@override_settings(RADICAL_EDGE=ALLOW)
def test_deliveries_follow_the_event_streams_visibility_rule_and_the_filters(people):
    owner, member, stranger, edge = people
    subs = {u.username: notify.subscription_create(user=u, actor=u, target="webhook", url="http://127.0.0.1:9/")
            for u in (owner, member, stranger)}
    ended = notify.subscription_create(user=owner, actor=owner, target="webhook", url="http://127.0.0.1:9/",
                                       edges=["hpc1"], plugin="psij", topic="job_status", states=["failed"])
    with pytest.raises(ValidationError, match="no edge named 'hpc1'"):
        notify.subscription_create(user=stranger, actor=stranger, target="webhook", url="http://127.0.0.1:9/",
                                   edges=["hpc1"])

    nobody = _event(events.NOTIFICATION)                         # no owner: edge owner only
    members = _event(events.NOTIFICATION, owner=member.pk)        # the member's own job
    failed = _event(events.NOTIFICATION, data={"job_id": "j2", "state": "FAILED"})
    offline = _event(events.TOPOLOGY)                             # any role
    worker.match_all()

    def got(sub):
        return sorted(Delivery.objects.filter(subscription=sub).values_list("event_id", flat=True))

    assert got(subs["owner"]) == [nobody, members, failed, offline]
    assert got(subs["member"]) == [members, offline]
    assert got(subs["stranger"]) == []
    assert got(ended) == [failed]

    # The grant goes before the delivery is sent: the member gets nothing more.
    services.grant_remove(edge=edge, user=member, actor=owner)
    _, batch = worker._pending(subs["member"].pk, 50)
    assert [visible for _, _, visible in batch] == [False, False]
    # ...and nothing new is matched for them.
    _event(events.TOPOLOGY)
    worker.match_all()
    assert got(subs["member"]) == [members, offline]


@override_settings(RADICAL_EDGE=ALLOW)
def test_a_subscription_never_gets_events_from_before_it_and_each_event_once(people):
    owner = people[0]
    before = _event(events.NOTIFICATION)
    sub = notify.subscription_create(user=owner, actor=owner, target="webhook", url="http://127.0.0.1:9/")
    after = _event(events.NOTIFICATION)
    worker.match_all()
    from bridge_app.notifications.models import NotifyCursor
    NotifyCursor.objects.update(last_event_id=0)  # a second matcher over the same events
    worker.match_all()
    assert list(Delivery.objects.filter(subscription=sub).values_list("event_id", flat=True)) == [after]
    assert before < after


@override_settings(RADICAL_EDGE=ALLOW, EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend")
def test_a_thousand_events_make_a_few_mails_each_with_an_unsubscribe_link(people):
    owner = people[0]
    sub = notify.subscription_create(user=owner, actor=owner, target="email", plugin="rhapsody")
    events._write([(events.NOTIFICATION, "hpc1", "rhapsody", "task_status", None,
                    {"tasks": [{"uid": f"t{i}", "state": "DONE"}]}, 1.0) for i in range(1000)])
    worker.match_all()
    while worker.email_batch_send(sub.pk) is not None and Delivery.objects.filter(status="pending").exists():
        pass
    assert len(mail.outbox) == 10  # 100 events per mail
    assert not Delivery.objects.filter(subscription=sub).exclude(status="delivered").exists()
    message = mail.outbox[0]
    assert message.to == ["owner@example.org"]
    assert "/notifications/unsubscribe/" in message.extra_headers["List-Unsubscribe"]
    token = message.extra_headers["List-Unsubscribe"].split("/unsubscribe/")[1].split("/")[0]
    assert notify.subscription_for_unsubscribe_token(token) == sub
    assert notify.subscription_for_unsubscribe_token(token + "x") is None


@override_settings(RADICAL_EDGE=ALLOW)
def test_an_edge_offline_too_long_is_reported_once_per_disconnection(people):
    edge = people[3]
    Edge.objects.filter(pk=edge.pk).update(status="offline", disconnected_at=timezone.now() - timedelta(minutes=30))
    first = derived.derived_emit()
    assert [(e["plugin"], e["topic"]) for e in first] == [("bridge", "edge_offline_long")]
    assert derived.derived_emit() == []
    Edge.objects.filter(pk=edge.pk).update(disconnected_at=timezone.now() - timedelta(minutes=20))  # a new one
    assert len(derived.derived_emit()) == 1


@override_settings(RADICAL_EDGE={**ALLOW, "NOTIFY_MAX_SUBSCRIPTIONS_PER_USER": 2})
def test_subscriptions_per_user_are_limited_and_every_change_is_audited(people):
    owner = people[0]
    a = notify.subscription_create(user=owner, actor=owner, target="browser")
    notify.subscription_create(user=owner, actor=owner, target="browser")
    with pytest.raises(ValidationError, match="2 subscriptions"):
        notify.subscription_create(user=owner, actor=owner, target="browser")
    notify.subscription_update(sub=a, actor=owner, topic="edge_offline")
    notify.subscription_secret_rotate(sub=a, actor=owner)
    notify.subscription_delete(sub=a, actor=owner)
    assert list(notify.subscription_audit_for_user(user=owner).values_list("action", flat=True)) == [
        "subscription_deleted", "subscription_secret_rotated", "subscription_updated", "subscription_created",
        "subscription_created"]
    assert ActionRecord.objects.filter(action__startswith="subscription_").count() == 5
    assert Subscription.objects.filter(user=owner).count() == 1


@override_settings(RADICAL_EDGE=ALLOW)
def test_a_job_near_its_walltime_is_reported_once_to_its_owner_and_an_ended_job_not_at_all(people):
    owner, member = people[0], people[1]
    sub = notify.subscription_create(user=member, actor=member, target="webhook", url="http://127.0.0.1:9/",
                                     plugin="bridge", topic="job_walltime_near")

    def job(job_id, state, **extra):
        events._write([(events.NOTIFICATION, "hpc1", "psij", "job_status", member.pk,
                        {"job_id": job_id, "state": state, **extra}, time.time())])

    job("long", "ACTIVE", walltime=300)      # 5 minutes left: within the 10 minutes' warning
    job("later", "ACTIVE", walltime=7200)    # 2 hours: not yet
    job("ended", "ACTIVE", walltime=60)
    job("ended", "COMPLETED")
    worker.match_all()
    first = derived.derived_emit()
    assert [(e["topic"], json.loads(e["json"])["data"]["job_id"]) for e in first] == [("job_walltime_near", "long")]
    assert first[0]["owner"] == member.pk
    assert derived.derived_emit() == []
    worker.match_all()
    assert Delivery.objects.filter(subscription=sub).count() == 1
    assert owner  # (the edge's owner sees it too, by the stream's rule)


@override_settings(RADICAL_EDGE={**ALLOW, "NOTIFY_ALLOCATION_PERCENT": 10.0})
def test_an_allocation_below_the_threshold_is_reported_once_per_account_period_and_limit(people):
    """From queue_info's usage events (what its budget watch emits): an account under 10%
    left is reported once however many usage events repeat it; one above, or without a
    limit, never; a raised limit spent again is a new occurrence. Only the edge's owner
    (and site admins) see it: the member's subscription gets nothing."""
    owner, member = people[0], people[1]
    mine = notify.subscription_create(user=owner, actor=owner, target="webhook", url="http://127.0.0.1:9/",
                                      plugin="bridge", topic="allocation_low")
    theirs = notify.subscription_create(user=member, actor=member, target="webhook", url="http://127.0.0.1:9/",
                                        plugin="bridge", topic="allocation_low")

    def usage(*accounts):
        events._write([(events.NOTIFICATION, "hpc1", "queue_info", "usage", None, {"accounts": [
            {"account": a, "limit": limit, "used": used, "remaining": None if limit is None else limit - used,
             "unit": "core-hours", "period_start": "2026-11-01", "period_end": "2026-12-31"}
            for a, limit, used in accounts]}, time.time())])
        written = []
        worker.match_all(written=written)
        return [(json.loads(e["json"])["data"]["account"], json.loads(e["json"])["data"]["percent_remaining"])
                for e in written]

    assert usage(("chem", 1000.0, 950.0), ("bio", 1000.0, 500.0), ("phys", None, 5.0)) == [("chem", 5.0)]
    assert usage(("chem", 1000.0, 990.0), ("bio", 1000.0, 880.0)) == []  # still low; bio has 12%
    assert usage(("bio", 1000.0, 905.0)) == [("bio", 9.5)]
    assert usage(("chem", 2000.0, 1000.0)) == []  # more granted: 50% left
    assert usage(("chem", 2000.0, 1900.0)) == [("chem", 5.0)]  # and spent again
    worker.match_all()  # the derived events themselves
    got = [e.data["account"] for e in EventRecord.objects.filter(topic="allocation_low").order_by("id")]
    assert got == ["chem", "bio", "chem"]
    assert Delivery.objects.filter(subscription=mine).count() == 3
    assert Delivery.objects.filter(subscription=theirs).count() == 0
    with override_settings(RADICAL_EDGE={**ALLOW, "NOTIFY_ALLOCATION_PERCENT": 0}):
        assert usage(("geo", 1000.0, 999.0)) == []


@override_settings(RADICAL_EDGE=ALLOW)
def test_site_admins_manage_subscriptions_in_django_admin_through_the_audited_services(people, client):
    owner = people[0]
    admin_user = get_user_model().objects.create_superuser("root", password="pw-" + "x" * 12)
    client.force_login(admin_user)
    response = client.post("/admin/bridge_app/subscription/add/", {
        "user": owner.pk, "name": "from admin", "edges": "[]", "plugin": "psij", "topic": "job_status",
        "states": '["FAILED"]', "match": "{}", "target": "email", "url": "", "email": "ops@example.org",
        "active": "on"})
    assert response.status_code == 302, response.content[:2000]
    sub = Subscription.objects.get(name="from admin")
    assert (sub.user, sub.states, sub.email) == (owner, ["FAILED"], "ops@example.org")
    assert client.get("/admin/bridge_app/subscription/").status_code == 200
    assert client.get(f"/admin/bridge_app/subscription/{sub.pk}/change/").status_code == 200
    assert client.get("/admin/bridge_app/delivery/").status_code == 200
    record = ActionRecord.objects.get(action="subscription_created")
    assert record.actor_id == admin_user.pk and record.target == f"subscription {sub.pk}"


def test_the_openapi_schema_describes_the_notification_resources(client, people):
    client.force_login(people[0])
    schema = client.get("/api/v1/schema/").json()
    paths = schema["paths"]
    for path in ["/api/v1/notifications/subscriptions/", "/api/v1/notifications/subscriptions/{id}/",
                 "/api/v1/notifications/subscriptions/{id}/test/",
                 "/api/v1/notifications/subscriptions/{id}/deliveries/",
                 "/api/v1/notifications/subscriptions/{id}/redeliver/",
                 "/api/v1/notifications/subscriptions/{id}/rotate_secret/", "/api/v1/notifications/audit/"]:
        assert any(p.rstrip("/") == path.rstrip("/") for p in paths), path


@override_settings(RADICAL_EDGE=ALLOW)
def test_subscriptions_waiting_out_a_dead_target_never_hide_one_that_is_due(people):
    owner = people[0]
    waiting = [notify.subscription_create(user=owner, actor=owner, target="browser") for _ in range(3)]
    due = notify.subscription_create(user=owner, actor=owner, target="browser")
    later = timezone.now() + timedelta(hours=1)
    for sub in [*waiting, due]:
        Delivery.objects.create(subscription=sub, event_id=1)
    Subscription.objects.filter(pk__in=[s.pk for s in waiting]).update(retry_at=later)
    assert worker.due_subscriptions(exclude=set(), limit=1) == [due.pk]
    # Leased by another process: not ours to serve until the lease expires.
    Subscription.objects.filter(pk=due.pk).update(lease_owner="elsewhere", lease_until=later)
    assert worker.due_subscriptions(exclude=set(), limit=10) == []
    assert not worker.lease_take(due.pk)
    Subscription.objects.filter(pk=due.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert worker.lease_take(due.pk) and worker.due_subscriptions(exclude=set(), limit=10) == [due.pk]
