"""Notifications end to end: a real bridge (embedded, or two on PostgreSQL + Redis), a real
agent (psij with the local executor, and the echo plugin), and real receivers on
127.0.0.1: an HTTP server that checks signatures and can fail, and an SMTP server."""

from __future__ import annotations

import re

import httpx
import pytest

from bridge_app.notifications.signing import verify
from edge_agent.client import BridgeClient, verify_signature
from tests.support.live import start_all, wait_for
from tests.support.receivers import SmtpReceiver, WebhookReceiver

pytestmark = pytest.mark.e2e

PLUGINS = "psij,tests.plugins.echo:EchoPlugin"
# The receivers listen on 127.0.0.1 over plain http: allowed here, refused by default.
TEST_ENV = {
    "RADICAL_NOTIFY_WORKER": "1",
    "RADICAL_NOTIFY_ALLOW_PRIVATE_TARGETS": "1",
    "RADICAL_NOTIFY_ALLOW_HTTP": "1",
    "RADICAL_NOTIFY_RETRY_BASE": "0.05",
    "RADICAL_NOTIFY_RETRY_MAX_DELAY": "0.2",
    "RADICAL_NOTIFY_POLL_INTERVAL": "0.3",
    "RADICAL_NOTIFY_WEBHOOK_TIMEOUT": "5",
}


@pytest.fixture
def receivers():
    made: list = []

    def make(kind=WebhookReceiver, **kwargs):
        made.append(kind(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def start_site(bridge_factory, agent_factory, name: str, *, mode: str = "embedded", env: dict | None = None,
               bridges: int = 1):
    made = start_all([bridge_factory(mode, env={**TEST_ENV, **(env or {})}, start=False) for _ in range(bridges)])
    bridge = made[0]
    seeded = bridge.seed(users=["owner", "stranger"], api_tokens=["owner", "stranger"], edge_tokens=[(name, "owner")])
    agent = agent_factory(bridge, seeded["edge"][name], plugins=PLUGINS, options=["psij.poll_interval=1"])
    wait_for(lambda: bridge.edge_online(seeded["api"]["owner"], name), 30, what="edge online")
    return type("Site", (), {"bridge": bridge, "bridges": made, "agent": agent, "edge": name,
                             "owner": seeded["api"]["owner"], "stranger": seeded["api"]["stranger"]})


def subscribe(bridge, token: str, **body) -> dict:
    with bridge.client(token) as c:
        r = c.post("/api/v1/notifications/subscriptions/", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def subscription(bridge, token: str, sub_id: int) -> dict:
    with bridge.client(token) as c:
        return c.get(f"/api/v1/notifications/subscriptions/{sub_id}/").json()


def deliveries(bridge, token: str, sub_id: int, **params) -> list[dict]:
    with bridge.client(token) as c:
        r = c.get(f"/api/v1/notifications/subscriptions/{sub_id}/deliveries/", params=params)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def emit(bridge, token: str, edge: str, count: int) -> None:
    with bridge.client(token) as c:
        assert c.post(f"/{edge}/echo/emit/{count}").json() == {"emitted": count}


def settled(bridge, token: str, sub_id: int) -> bool:
    sub = subscription(bridge, token, sub_id)
    return sub["pending"] == 0


def test_a_finished_psij_job_posts_one_signed_webhook(bridge_factory, agent_factory, unique_name, receivers):
    site = start_site(bridge_factory, agent_factory, unique_name)
    hook = receivers()
    sub = subscribe(site.bridge, site.owner, name="my jobs", target="webhook", url=hook.url, edges=[site.edge],
                    plugin="psij", topic="job_status", states=["COMPLETED", "FAILED"])
    assert sub["secret"].startswith("whsec_")
    assert "secret" not in subscription(site.bridge, site.owner, sub["id"])  # shown once

    with BridgeClient(site.bridge.url, token=site.owner) as bc:
        pj = bc.get_edge_client(site.edge).get_plugin("psij")
        job = pj.submit_job({"executable": "/bin/sh", "arguments": ["-c", "exit 3"]})
        assert pj.wait_job(job["job_id"], timeout=60, interval=0.2)["state"] == "FAILED"

    wait_for(lambda: hook.accepted(), 30, what="the webhook")
    wait_for(lambda: [d for d in deliveries(site.bridge, site.owner, sub["id"]) if d["status"] == "delivered"], 30,
             what="the delivery recorded")
    assert settled(site.bridge, site.owner, sub["id"])
    [(headers, body)] = [(h, b) for h, b, _ in hook.requests]
    assert verify(sub["secret"], body, headers["radical-signature"])
    assert not verify(sub["secret"], body + b" ", headers["radical-signature"])
    event = hook.accepted()[0][1]
    assert (event["edge"], event["plugin"], event["topic"]) == (site.edge, "psij", "job_status")
    assert (event["data"]["job_id"], event["data"]["state"], event["data"]["exit_code"]) == (job["job_id"], "FAILED", 3)
    assert headers["idempotency-key"] == str(event["id"]) == headers["radical-event-id"]
    assert event["subscription"] == sub["id"]

    # The test button sends a signed test event at once.
    with site.bridge.client(site.owner) as c:
        assert c.post(f"/api/v1/notifications/subscriptions/{sub['id']}/test/").json()["ok"] is True
    assert hook.accepted()[-1][1]["kind"] == "test"
    # Every change is audited, and a user sees only their own.
    with site.bridge.client(site.owner) as c:
        assert c.delete(f"/api/v1/notifications/subscriptions/{sub['id']}/").status_code == 204
        actions = [a["action"] for a in c.get("/api/v1/notifications/audit/").json()["results"]]
    assert actions == ["subscription_deleted", "subscription_created"]
    with site.bridge.client(site.stranger) as c:
        assert c.get("/api/v1/notifications/audit/").json()["results"] == []


def test_a_failing_receiver_gets_each_event_once_in_order_after_retries(bridge_factory, agent_factory, unique_name,
                                                                        receivers):
    site = start_site(bridge_factory, agent_factory, unique_name)
    hook = receivers(fail_first=3)
    sub = subscribe(site.bridge, site.owner, target="webhook", url=hook.url, plugin="echo", topic="tick")
    emit(site.bridge, site.owner, site.edge, 5)
    wait_for(lambda: len(hook.accepted()) == 5, 60, what="five deliveries")
    wait_for(lambda: settled(site.bridge, site.owner, sub["id"]), 30, what="the outbox empty")
    assert [code for _, _, code in hook.requests] == [500, 500, 500, 200, 200, 200, 200, 200]
    got = [e["data"]["i"] for _, e in hook.accepted()]
    assert got == [0, 1, 2, 3, 4]  # in order, each once
    done = deliveries(site.bridge, site.owner, sub["id"], status="delivered")
    assert sorted(d["attempts"] for d in done) == [0, 0, 0, 0, 3]


def test_a_dead_receiver_is_dead_lettered_with_its_error_and_redelivered(bridge_factory, agent_factory, unique_name,
                                                                         receivers):
    site = start_site(bridge_factory, agent_factory, unique_name, env={"RADICAL_NOTIFY_RETRY_FOR": "1"})
    hook = receivers(failing=True)
    with BridgeClient(site.bridge.url, token=site.owner) as bc:  # through the SDK this time
        sub = bc.subscribe(target="webhook", url=hook.url, plugin="echo", topic="tick")
        emit(site.bridge, site.owner, site.edge, 2)
        dead = wait_for(lambda: len(d := bc.deliveries(sub["id"], status="dead")) == 2 and d, 60,
                        what="two dead-lettered deliveries")
        assert all(d["last_error"].startswith("HTTP 500") for d in dead)
        # The first was retried; the second, queued behind it as long, goes dead at its first failure.
        assert max(d["attempts"] for d in dead) >= 2
        [mine] = bc.subscriptions()
        assert mine["last_error"].startswith("HTTP 500") and mine["dead"] == 2
        assert hook.accepted() == []

        hook.failing = False
        assert bc.redeliver(sub["id"]) == 2
        wait_for(lambda: len(hook.accepted()) == 2, 30, what="the redelivery")
        assert [e["data"]["i"] for _, e in hook.accepted()] == [0, 1]
        headers, body, _ = hook.requests[-1]
        assert verify_signature(sub["secret"], body, headers["radical-signature"])
        bc.unsubscribe(sub["id"])
        assert bc.subscriptions() == []


def test_events_reach_a_real_smtp_server_batched_with_an_unsubscribe_link(bridge_factory, agent_factory, unique_name,
                                                                          receivers):
    smtp = receivers(SmtpReceiver)
    site = start_site(bridge_factory, agent_factory, unique_name, env={
        "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(smtp.port), "RADICAL_NOTIFY_EMAIL_BATCH_SECONDS": "1",
        "DEFAULT_FROM_EMAIL": "bridge@example.org"})
    site.bridge.env["RADICAL_PUBLIC_URL"] = site.bridge.url  # links in mails (set before the next start)
    site.bridge.stop()
    site.bridge.start()
    wait_for(lambda: site.bridge.edge_online(site.owner, site.edge), 30, what="edge back")
    sub = subscribe(site.bridge, site.owner, target="email", email="owner@example.org", plugin="echo", topic="tick")
    emit(site.bridge, site.owner, site.edge, 200)
    wait_for(lambda: settled(site.bridge, site.owner, sub["id"]) and smtp.messages, 60, what="the mails")
    mails = list(smtp.messages)
    assert 1 <= len(mails) <= 5  # batched, not 200 mails
    ids = [int(i) for m in mails for i in re.findall(r"^- #(\d+) ", m.get_content(), re.M)]
    assert len(ids) == 200 and len(set(ids)) == 200
    mail = mails[0]
    assert mail["To"] == "owner@example.org" and mail["From"] == "bridge@example.org"
    link = re.search(r"<(http[^>]+)>", mail["List-Unsubscribe"]).group(1)
    assert link in mail.get_content()
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # One click (RFC 8058), no login: the subscription ends, and no more mails come.
    assert httpx.get(link).status_code == 200
    assert httpx.post(link, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with site.bridge.client(site.owner) as c:
        assert c.get(f"/api/v1/notifications/subscriptions/{sub['id']}/").status_code == 404


def test_a_stranger_gets_nothing_of_an_edge_they_may_not_see(bridge_factory, agent_factory, unique_name, receivers):
    site = start_site(bridge_factory, agent_factory, unique_name)
    mine, theirs = receivers(), receivers()
    with site.bridge.client(site.stranger) as c:
        r = c.post("/api/v1/notifications/subscriptions/", json={"target": "webhook", "url": theirs.url,
                                                                  "edges": [site.edge]})
        assert r.status_code == 400 and "no edge named" in r.text
    subscribe(site.bridge, site.stranger, target="webhook", url=theirs.url)  # "all my edges": none
    owner_sub = subscribe(site.bridge, site.owner, target="webhook", url=mine.url, plugin="echo")
    emit(site.bridge, site.owner, site.edge, 3)
    wait_for(lambda: len(mine.accepted()) == 3, 30, what="the owner's deliveries")
    wait_for(lambda: settled(site.bridge, site.owner, owner_sub["id"]), 30, what="settled")
    # The agent going away is a topology event (any role sees it): still nothing for them.
    site.agent.stop()
    wait_for(lambda: not site.bridge.edge_online(site.owner, site.edge), 30, what="edge offline")
    emit_done = subscribe(site.bridge, site.owner, target="webhook", url=mine.url, topic="edge_offline")
    assert emit_done["id"]
    assert theirs.requests == []


def test_ssrf_targets_are_refused_where_the_site_does_not_allow_them(bridge_factory, agent_factory, unique_name):
    bridge = bridge_factory(env={"RADICAL_NOTIFY_WORKER": "1"})
    token = bridge.seed(users=["owner"], api_tokens=["owner"])["api"]["owner"]
    with bridge.client(token) as c:
        for url in ["https://127.0.0.1/hook", "https://localhost:8443/x", "https://169.254.169.254/latest/meta-data",
                    "https://10.1.2.3/", "https://192.168.0.1/", "https://[::1]/", "https://[fe80::1]/",
                    "https://0.0.0.0/", "https://100.64.0.1/", "http://example.org/", "ftp://example.org/",
                    "https://user:pw@example.org/"]:
            r = c.post("/api/v1/notifications/subscriptions/", json={"target": "webhook", "url": url})
            assert r.status_code == 400, (url, r.text)
        assert c.get("/api/v1/notifications/subscriptions/").json() == []


def test_scaled_bridges_deliver_each_event_exactly_once(bridge_factory, agent_factory, unique_name, receivers):
    site = start_site(bridge_factory, agent_factory, unique_name, mode="scaled", bridges=2)
    hook = receivers()
    other = site.bridges[1]
    sub = subscribe(other, site.owner, target="webhook", url=hook.url, plugin="echo", topic="tick")
    emit(site.bridge, site.owner, site.edge, 40)
    wait_for(lambda: len(hook.accepted()) >= 40, 60, what="40 deliveries")
    wait_for(lambda: settled(other, site.owner, sub["id"]), 30, what="settled")
    got = [e["data"]["i"] for _, e in hook.accepted()]
    assert sorted(got) == list(range(40)) and got == sorted(got)  # once each, in order
    assert len(hook.requests) == 40


def test_deliveries_survive_a_bridge_restart_while_the_receiver_is_down(bridge_factory, agent_factory, unique_name,
                                                                        receivers):
    site = start_site(bridge_factory, agent_factory, unique_name)
    hook = receivers(failing=True)
    sub = subscribe(site.bridge, site.owner, target="webhook", url=hook.url, plugin="echo", topic="tick")
    emit(site.bridge, site.owner, site.edge, 10)
    wait_for(lambda: subscription(site.bridge, site.owner, sub["id"])["pending"] == 10, 30, what="10 owed")
    site.bridge.kill()  # no graceful stop
    hook.failing = False
    site.bridge.start()
    wait_for(lambda: len(hook.accepted()) == 10, 90, what="the owed deliveries")
    wait_for(lambda: settled(site.bridge, site.owner, sub["id"]), 30, what="settled")
    assert [e["data"]["i"] for _, e in hook.accepted()] == list(range(10))


def test_a_job_near_its_walltime_is_reported_once(bridge_factory, agent_factory, unique_name, receivers):
    site = start_site(bridge_factory, agent_factory, unique_name,
                      env={"RADICAL_NOTIFY_WALLTIME_MINUTES": "5", "RADICAL_NOTIFY_DERIVED_INTERVAL": "0.3"})
    hook = receivers()
    sub = subscribe(site.bridge, site.owner, target="webhook", url=hook.url, plugin="bridge",
                    topic="job_walltime_near")
    with BridgeClient(site.bridge.url, token=site.owner) as bc:
        pj = bc.get_edge_client(site.edge).get_plugin("psij")
        job = pj.submit_job({"executable": "/bin/sleep", "arguments": ["300"], "attributes": {"duration": 120}})
        wait_for(lambda: hook.accepted(), 60, what="the walltime warning")
        warned = pj.get_job_status(job["job_id"], output=False)["state"]
        pj.cancel_job(job["job_id"])
        assert pj.wait_job(job["job_id"], timeout=60, interval=0.2)["state"] == "CANCELED"
    assert warned == "ACTIVE"
    wait_for(lambda: settled(site.bridge, site.owner, sub["id"]), 30, what="settled")
    [(_, event)] = hook.accepted()
    assert (event["plugin"], event["topic"], event["data"]["job_id"]) == ("bridge", "job_walltime_near", job["job_id"])
    assert 0 < event["data"]["seconds_left"] <= 120


def test_scaled_deliveries_survive_a_bridge_process_killed_while_it_owes_them(bridge_factory, agent_factory,
                                                                            unique_name, receivers):
    site = start_site(bridge_factory, agent_factory, unique_name, mode="scaled", bridges=2, env={
        "RADICAL_NOTIFY_LEASE_SECONDS": "2", "RADICAL_NOTIFY_WEBHOOK_TIMEOUT": "1"})
    hook = receivers(failing=True)
    survivor, doomed = site.bridges
    sub = subscribe(doomed, site.owner, target="webhook", url=hook.url, plugin="echo", topic="tick")
    emit(survivor, site.owner, site.edge, 10)
    wait_for(lambda: subscription(survivor, site.owner, sub["id"])["pending"] == 10, 30, what="10 owed")
    wait_for(lambda: len(hook.requests) >= 4, 30, what="both processes trying")
    doomed.kill()  # SIGKILL: whatever it held, it cannot hand over
    hook.failing = False
    wait_for(lambda: len(hook.accepted()) == 10, 90, what="the owed deliveries")
    wait_for(lambda: settled(survivor, site.owner, sub["id"]), 30, what="settled")
    assert [e["data"]["i"] for _, e in hook.accepted()] == list(range(10))  # each once, in order
