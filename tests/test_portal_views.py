"""The portal's server-rendered pages, without a browser: who sees which page, what the
page's script is told, errors in words, and markup from agents escaped. The browser tests
(test_portal_browser.py) cover what the scripts do with it."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client
from django.utils import timezone

from bridge_app.domain import services
from bridge_app.models import Edge, PluginRegistration

# Transactional: the session proxy reads the database from a worker thread, which must not
# run inside a test-wide transaction (it would close the connection under it).
pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def users(django_user_model):
    make = django_user_model.objects.create_user
    return {name: make(name) for name in ("olga", "vera", "uma", "stranger")}


@pytest.fixture
def edge(users) -> Edge:
    token, _ = services.edge_token_create(name="hpc1", owner=users["olga"])
    edge = token.edge
    services.grant_set(edge=edge, role="viewer", user=users["vera"])
    services.grant_set(edge=edge, role="user", user=users["uma"])
    Edge.objects.filter(pk=edge.pk).update(status="online", last_seen=timezone.now(), host=f"login{HOSTILE}",
                                           facts={"hostname": "login1", "user": "olga", "odd": SCRIPT})
    for name, schema in [
        ("sysinfo", {"title": "System info"}), ("queue_info", {"title": "Queues & allocations"}),
        ("psij", {"title": "Batch jobs (PSI/J)"}), ("rhapsody", {"title": "Rhapsody tasks"}),
        ("scratch", {"title": f"Scratch {HOSTILE}", "description": SCRIPT, "forms": [], "monitors": []}),
        (f"evil{HOSTILE}", None),
    ]:
        PluginRegistration.objects.create(edge=edge, name=name, version="1.0", description="",
                                          routes=[{"method": "GET", "path": "x", "readonly": True}], ui_schema=schema)
    edge.refresh_from_db()
    return edge


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_context(response) -> dict:
    html = response.content.decode()
    found = re.search(r'<script id="page-context" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the page has no page-context"
    return json.loads(found.group(1))


def test_every_page_of_an_edge_renders_for_its_owner(users, edge):
    client = client_for(users["olga"])
    paths = ["/", "/edges/hpc1/", "/edges/hpc1/plugins/psij/jobs/some-job/", "/tokens/", "/edges/hpc1/sharing/"]
    paths += [f"/edges/hpc1/plugins/{p}/" for p in ("sysinfo", "queue_info", "psij", "rhapsody", "scratch")]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        # Scripts come from static files only; data rides in a JSON script the browser never runs.
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (path, tag)
        for tag in re.findall(r"<[a-zA-Z][^>]*>", html):
            bare = re.sub(r'"[^"]*"', '""', tag)  # attribute values may say anything
            assert not re.search(r"\son[a-z]+\s*=", bare), (path, tag)
        assert "unsafe-inline" not in response["Content-Security-Policy"]


def test_the_page_tells_its_script_the_role_and_only_writers_may_submit(users, edge):
    for who, role, can_write in [("olga", "owner", True), ("uma", "user", True), ("vera", "viewer", False)]:
        response = client_for(users[who]).get("/edges/hpc1/plugins/psij/")
        context = page_context(response)
        assert (context["role"], context["canWrite"], context["edge"], context["plugin"]) == (role, can_write, "hpc1",
                                                                                             "psij")
        assert context["online"] is True and "queue_info" in context["plugins"]
        assert ("may look but not submit" in response.content.decode()) is (not can_write)


def test_strangers_and_missing_things_get_a_not_found_page_in_words(users, edge):
    stranger = client_for(users["stranger"])
    for path in ("/edges/hpc1/", "/edges/hpc1/plugins/psij/", "/edges/nosuch/", "/edges/hpc1/plugins/psij/jobs/x/"):
        response = stranger.get(path)
        assert response.status_code == 404, path
        assert "No such edge" in response.content.decode()
    owner = client_for(users["olga"])
    response = owner.get("/edges/hpc1/plugins/nosuch/")
    assert response.status_code == 404 and "does not offer a plugin named" in response.content.decode()
    PluginRegistration.objects.filter(edge=edge, name="psij").delete()
    response = owner.get("/edges/hpc1/plugins/psij/jobs/x/")
    assert response.status_code == 404 and "does not offer the psij plugin" in response.content.decode()
    assert "No such edge" not in owner.get("/edges/hpc1/plugins/nosuch/").content.decode()
    response = owner.get("/no/such/page/at/all/")
    assert response.status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(edge):
    for path in ("/", "/edges/hpc1/", "/edges/hpc1/plugins/sysinfo/", "/edges/hpc1/plugins/psij/jobs/x/"):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), path


def test_markup_an_agent_announced_is_escaped(users, edge):
    client = client_for(users["olga"])
    for path in ("/", "/edges/hpc1/", "/edges/hpc1/plugins/scratch/", "/edges/hpc1/plugins/sysinfo/"):
        html = client.get(path).content.decode()
        assert HOSTILE not in html and SCRIPT not in html, path
    overview = client.get("/edges/hpc1/").content.decode()
    assert "evil&lt;img src=x onerror=alert(1)&gt;" in overview
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in overview  # a host fact
    scratch = client.get("/edges/hpc1/plugins/scratch/")
    # The UI schema reaches the page's script as JSON, with < and > escaped for the script tag.
    assert page_context(scratch)["uiSchema"]["title"] == f"Scratch {HOSTILE}"
    assert "Scratch \\u003Cimg" in scratch.content.decode()
    evil = client.get("/edges/hpc1/plugins/evil%3Cimg%20src=x%20onerror=alert(1)%3E/")
    assert evil.status_code == 200 and HOSTILE not in evil.content.decode()
    assert "announces no UI schema" in evil.content.decode()


def test_an_offline_edge_says_so_on_its_pages(users, edge):
    Edge.objects.filter(pk=edge.pk).update(status="offline")
    response = client_for(users["olga"]).get("/edges/hpc1/plugins/psij/")
    html = response.content.decode()
    assert page_context(response)["online"] is False
    banner = re.search(r'<div id="edge-offline"[^>]*>', html).group(0)
    assert "hidden" not in banner and "This edge is offline." in html
    Edge.objects.filter(pk=edge.pk).update(status="online", suspended=True)
    html = client_for(users["olga"]).get("/edges/hpc1/").content.decode()
    assert "This edge is suspended." in html
