"""Findings 8 and 9 of the attack review (issue 20) and its "Also" list: deeply nested
JSON, one behaviour for browser-session and token proxy calls, ALLOWED_HOSTS on the paths
served outside Django, and a deadline for slow request heads."""

from __future__ import annotations

import hashlib
import socket

import httpx
import pytest
from django.test import Client

from bridge_app.domain import services
from tests.support.live import wait_for
from tests.test_events_e2e import login


@pytest.mark.django_db
def test_deeply_nested_json_to_the_rest_api_is_a_json_400(django_user_model):
    olga = django_user_model.objects.create_user("olga")
    services.edge_token_create(name="hpc1", owner=olga)
    _, token = services.api_token_create(user=olga)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    r = client.post("/api/v1/edges/hpc1/grants", "[" * 200_000 + "]" * 200_000, content_type="application/json")
    assert r.status_code == 400 and r["Content-Type"] == "application/json"
    assert r.json()["error"] == "parse_error" and "nested too deeply" in r.json()["detail"]


@pytest.mark.e2e
def test_browser_sessions_get_the_same_body_limit_and_json_errors_as_tokens(bridge_factory, agent_factory,
                                                                           unique_name):
    bridge = bridge_factory(env={"RADICAL_MAX_BODY_BYTES": str(4 * 1024 * 1024)})
    seeded = bridge.seed(users=["olga"], api_tokens=["olga"], edge_tokens=[(unique_name, "olga")])
    agent_factory(bridge, seeded["edge"][unique_name], plugins="tests.plugins.echo:EchoPlugin")
    wait_for(lambda: bridge.edge_online(seeded["api"]["olga"], unique_name), 20, what="edge online")
    path = f"/{unique_name}/echo/digest"
    body = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB: over Django's form limit, under ours
    too_big = b"x" * (4 * 1024 * 1024 + 1)

    cookies = login(bridge.url, "olga")
    with httpx.Client(base_url=bridge.url, cookies=cookies, timeout=60) as portal:
        csrf = {"X-CSRFToken": portal.cookies["csrftoken"], "Referer": bridge.url + "/"}
        r = portal.post(path, content=body, headers=csrf)
        assert r.status_code == 200, r.text[:300]
        assert r.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        r = portal.post(path, content=too_big, headers=csrf)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        r = portal.post(path, content=b"{}", headers={"Referer": bridge.url + "/"})  # no CSRF token
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"

    with bridge.client(seeded["api"]["olga"]) as c:  # the same answers with a token
        assert c.post(path, content=body).json()["size"] == len(body)
        r = c.post(path, content=too_big)
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"

    with httpx.Client(base_url=bridge.url) as nobody:
        r = nobody.post(path, content=b"{}")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.e2e
def test_paths_served_outside_django_check_allowed_hosts(edge_setup):
    site = edge_setup()
    auth = {"Authorization": f"Bearer {site.token}"}
    with httpx.Client(base_url=site.bridge.url, timeout=20) as c:
        assert c.get(f"/{site.edge}/echo/ping", headers=auth).status_code == 200
        for path in (f"/{site.edge}/echo/ping", f"/api/v1/edges/{site.edge}/echo/ping", "/events"):
            r = c.get(path, headers={**auth, "Host": "evil.example"})
            assert r.status_code == 400 and r.json()["error"] == "bad_host", path
        assert c.get("/api/v1/edges/", headers={**auth, "Host": "evil.example"}).status_code == 400  # Django's


@pytest.mark.e2e
def test_a_slow_request_head_is_cut_off(bridge_factory):
    bridge = bridge_factory(env={"RADICAL_HEADER_TIMEOUT": "1"})
    host, port = bridge.url.rsplit("//", 1)[1].split(":")
    slow = socket.create_connection((host, int(port)), timeout=15)
    idle = socket.create_connection((host, int(port)), timeout=15)
    try:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        answer = b""
        while chunk := slow.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
        assert idle.recv(4096).startswith(b"HTTP/1.1 408")  # a connection that never spoke
    finally:
        slow.close()
        idle.close()
    # A keep-alive client that sends whole requests is not affected.
    with httpx.Client(base_url=bridge.url) as c:
        assert all(c.get("/healthz").status_code == 200 for _ in range(3))


@pytest.mark.e2e
def test_deeply_nested_json_to_a_plugin_is_a_json_400(edge_setup):
    site = edge_setup()
    with site.bridge.client(site.token) as c:
        r = c.post(f"/{site.edge}/sysinfo/register_session", content=b"[" * 200_000 + b"]" * 200_000)
        assert r.status_code == 400 and r.json()["error"] == "bad_json" and "nested too deeply" in r.json()["detail"]
        assert c.post(f"/{site.edge}/sysinfo/register_session").status_code == 200  # the agent is fine


@pytest.mark.e2e
def test_a_token_guesser_is_slowed_down_and_recorded(bridge_factory, unique_name):
    bridge = bridge_factory(env={"RADICAL_AUTH_FAILURE_BURST": "5", "RADICAL_AUTH_FAILURE_RATE": "0.01"})
    seeded = bridge.seed(users=["olga"], api_tokens=["olga"], edge_tokens=[(unique_name, "olga")])
    with httpx.Client(base_url=bridge.url, timeout=20) as c:
        guesses = [c.get(f"/{unique_name}/sysinfo/version", headers={"Authorization": f"Bearer re_guess{i}",
                                                                       "X-Request-ID": f"guess-{i}"})
                   for i in range(8)]
        assert [r.status_code for r in guesses] == [401] * 5 + [429] * 3
        assert guesses[-1].json()["error"] == "too_many_failures" and int(guesses[-1].headers["retry-after"]) >= 1
        # The event stream counts the same failures...
        r = c.get("/events", headers={"Authorization": "Bearer re_guess9"})
        assert r.status_code == 429 and r.json()["error"] == "too_many_failures"
        # ...and a genuine token is not refused for them (it is not a guess).
        assert c.get("/api/v1/edges/", headers={"Authorization": f"Bearer {seeded['api']['olga']}"}).status_code == 200
    bridge.stop()  # SIGTERM: the audit buffer is written
    out = bridge.manage("shell", "-c", "from bridge_app.models import CallRecord as C; "
                                       "print(sorted(C.objects.filter(request_id__startswith='guess-')"
                                       ".values_list('request_id', 'status')))")
    assert out.stdout.strip().splitlines()[-1] == repr(sorted([(f"guess-{i}", 401 if i < 5 else 429)
                                                               for i in range(8)]))
