"""The portal as a newcomer finds it (issue 14), without a browser: who jobs run as, root
agents flagged, sharing "user" only with a confirmation, adding an edge yourself, secrets
shown once after a redirect, the admin's token page and audit filters. What the scripts do
with it is in test_portal_newcomer_browser.py."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from bridge_app.access.tokens import token_digest
from bridge_app.domain import services
from bridge_app.models import ApiToken, CallRecord, Edge, EdgeGrant, EdgeToken, PluginRegistration

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def users(django_user_model):
    make = django_user_model.objects.create_user
    made = {name: make(name) for name in ("olga", "vera", "uma", "nina")}
    made["root"] = django_user_model.objects.create_superuser("root", "root@example.org", "pw-" + "x" * 12)
    return made


def _edge(users, *, unix_user: str = "olga", uid: str = "1000") -> Edge:
    token, _ = services.edge_token_create(name="hpc1", owner=users["olga"])
    edge = token.edge
    services.grant_set(edge=edge, role="viewer", user=users["vera"])
    services.grant_set(edge=edge, role="user", user=users["uma"])
    Edge.objects.filter(pk=edge.pk).update(status="online", last_seen=timezone.now(), host="login1.example",
                                           agent_version="9.9.9",
                                           facts={"hostname": "login1", "user": unix_user, "uid": uid,
                                                  "agent_version": "9.9.9"})
    for name, title in [("psij", "Batch jobs (PSI/J)"), ("rhapsody", "Rhapsody tasks"), ("sysinfo", "System info")]:
        PluginRegistration.objects.create(edge=edge, name=name, version="1.0", routes=[], ui_schema={"title": title})
    edge.refresh_from_db()
    return edge


@pytest.fixture
def edge(users) -> Edge:
    return _edge(users)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text_of(response) -> str:
    """The page's text, tags removed and white space collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


# --- who a job runs as --------------------------------------------------------------------------


def test_edge_and_submit_pages_say_which_unix_account_jobs_run_as(users, edge):
    for who in ("olga", "uma", "vera"):
        client = client_for(users[who])
        for path in ("/edges/hpc1/", "/edges/hpc1/plugins/psij/", "/edges/hpc1/plugins/rhapsody/",
                     "/edges/hpc1/plugins/psij/jobs/j1/"):
            text = text_of(client.get(path))
            assert "Runs as olga on login1 , with their files and allocations" in text, (who, path)
    shared = text_of(client_for(users["uma"]).get("/edges/hpc1/"))
    assert "this is the account of the edge's owner, olga, not your own" in shared
    assert "Jobs run as olga on login1 , with their files and allocations (the account of olga" in text_of(
        client_for(users["uma"]).get("/edges/hpc1/plugins/psij/"))
    assert "not your own" not in text_of(client_for(users["olga"]).get("/edges/hpc1/"))


def test_the_page_context_tells_scripts_who_jobs_run_as(users, edge):
    html = client_for(users["uma"]).get("/edges/hpc1/plugins/psij/").content.decode()
    assert '"runsAs": {"user": "olga", "host": "login1", "root": false}' in html


def test_an_agent_running_as_root_is_flagged_to_its_owner_and_admins(users):
    _edge(users, unix_user="root", uid="0")
    for who in ("olga", "root"):
        client = client_for(users[who])
        edge_page = client.get("/edges/hpc1/").content.decode()
        assert 'id="root-warning"' in edge_page and "runs as root on login1" in edge_page, who
        dashboard = client.get("/").content.decode()
        assert 'id="root-edges"' in dashboard and "runs as root" in dashboard, who
        sharing = client.get("/edges/hpc1/sharing/").content.decode()
        assert 'id="root-warning"' in sharing and "gets full control of that host" in sharing, who
    for who in ("uma", "vera"):
        page = client_for(users[who]).get("/edges/hpc1/").content.decode()
        assert 'id="root-warning"' not in page, who
        assert "Runs as <strong>root</strong>" in page, who  # still told who jobs run as
        assert 'id="root-edges"' not in client_for(users[who]).get("/").content.decode()


def test_a_uid_of_zero_is_root_whatever_the_name(users):
    _edge(users, unix_user="toor", uid="0")
    assert 'id="root-warning"' in client_for(users["olga"]).get("/edges/hpc1/").content.decode()


def test_host_facts_show_the_uid_with_the_user_and_the_agent_version_once(users, edge):
    html = client_for(users["olga"]).get("/edges/hpc1/").content.decode()
    assert "olga (uid 1000)" in html
    assert html.count("9.9.9") == 1


def test_plugin_pages_are_headed_by_their_title(users, edge):
    html = client_for(users["olga"]).get("/edges/hpc1/plugins/psij/").content.decode()
    h1 = re.search(r"<h1>(.*?)</h1>", html, re.S).group(1)
    assert "Batch jobs (PSI/J)" in h1 and "on hpc1" in h1
    dashboard = client_for(users["olga"]).get("/").content.decode()
    assert ">Batch jobs (PSI/J)</a>" in dashboard and ">psij</a>" not in dashboard


# --- sharing hands over the account ---------------------------------------------------------------


def test_sharing_as_user_names_the_account_and_needs_a_confirmation(users, edge):
    client = client_for(users["olga"])
    page = text_of(client.get("/edges/hpc1/sharing/"))
    assert "runs as olga on login1 , with their files and allocations" in page
    assert "I understand that a “user” runs programs as olga on login1" in page
    refused = client.post("/edges/hpc1/sharing/", {"kind": "user", "name": "nina", "role": "user"})
    assert refused.status_code == 400 and "Confirm that you hand over this Unix account" in refused.content.decode()
    assert not EdgeGrant.objects.filter(user=users["nina"]).exists()
    # A viewer runs nothing, so no confirmation is needed.
    assert client.post("/edges/hpc1/sharing/", {"kind": "user", "name": "nina", "role": "viewer"}).status_code == 302
    granted = client.post("/edges/hpc1/sharing/", {"kind": "user", "name": "nina", "role": "user",
                                                   "confirm_identity": "on"})
    assert granted.status_code == 302 and EdgeGrant.objects.get(user=users["nina"]).role == "user"


def test_destructive_forms_ask_first(users, edge):
    client = client_for(users["olga"])
    services.api_token_create(user=users["olga"], name="laptop")
    tokens = client.get("/tokens/").content.decode()
    assert re.search(r'<form[^>]*tokens/\d+/revoke/[^>]*\sdata-confirm="Revoke token', tokens.replace("\n", " "))
    sharing = client.get("/edges/hpc1/sharing/").content.decode().replace("\n", " ")
    assert re.search(r'<form[^>]*sharing/\d+/remove/[^>]*data-confirm="Remove the role of', sharing)
    assert re.search(r'<form[^>]*/state/[^>]*data-confirm="Suspend hpc1\?"', sharing)


# --- secrets shown once, after a redirect ------------------------------------------------------------


def test_creating_a_token_redirects_and_a_reload_creates_no_second_one(users):
    client = client_for(users["nina"])
    posted = client.post("/tokens/", {"name": "laptop", "scope": "full", "expires_in_days": 30})
    assert posted.status_code == 302 and posted["Location"] == "/tokens/"
    shown = client.get("/tokens/").content.decode()
    secret = re.search(r'id="new-token" type="text" value="(rda_[^"]+)"', shown).group(1)
    assert ApiToken.objects.get(user=users["nina"]).digest == token_digest(secret)
    reloaded = client.get("/tokens/").content.decode()
    assert secret not in reloaded and 'id="new-token"' not in reloaded
    assert ApiToken.objects.filter(user=users["nina"]).count() == 1


def test_a_bad_token_form_is_answered_in_place(users):
    response = client_for(users["nina"]).post("/tokens/", {"name": "x", "scope": "full", "expires_in_days": 0})
    assert response.status_code == 400 and not ApiToken.objects.filter(user=users["nina"]).exists()


# --- adding an edge ---------------------------------------------------------------------------------


def test_a_user_without_edges_is_offered_to_add_one_not_a_server_command(users):
    html = client_for(users["nina"]).get("/").content.decode()
    assert "manage.py" not in html and 'href="/edges/new/"' in html


def test_a_user_adds_an_edge_and_gets_its_token_once_with_the_agent_command(users):
    client = client_for(users["nina"])
    posted = client.post("/edges/new/", {"name": "nina-laptop", "description": "my laptop"})
    assert posted.status_code == 302 and posted["Location"] == "/edges/nina-laptop/connect/"
    edge = Edge.objects.get(name="nina-laptop")
    assert edge.owner == users["nina"] and edge.description == "my laptop"
    page = client.get(posted["Location"]).content.decode()
    secret = re.search(r'id="new-edge-token" type="text" value="(rde_[^"]+)"', page).group(1)
    assert EdgeToken.objects.get(edge=edge).digest == token_digest(secret)
    assert "radical-edge-service --url http://testserver --token-file ~/.radical/edge.token" in page
    assert 'data-copy="cmd-run"' in page and 'data-copy="new-edge-token"' in page
    assert secret not in client.get(posted["Location"]).content.decode()  # shown once
    # The owner may issue another token there; it is shown once after a redirect, too.
    again = client.post("/edges/nina-laptop/connect/")
    assert again.status_code == 302 and EdgeToken.objects.filter(edge=edge).count() == 2
    assert 'id="new-edge-token"' in client.get("/edges/nina-laptop/connect/").content.decode()
    # Nobody else may see or use that page.
    assert client_for(users["uma"]).get("/edges/nina-laptop/connect/").status_code == 404


def test_adding_edges_is_limited_and_names_must_be_free(users, edge, settings):
    settings.RADICAL_EDGE = {**getattr(settings, "RADICAL_EDGE", {}), "USER_EDGES_MAX": 1}
    client = client_for(users["nina"])
    taken = client.post("/edges/new/", {"name": "hpc1"})
    assert taken.status_code == 400 and "is taken" in taken.content.decode()
    assert Edge.objects.get(name="hpc1").owner == users["olga"]  # no takeover
    reserved = client.post("/edges/new/", {"name": "new"})
    assert reserved.status_code == 400 and "reserved" in reserved.content.decode()
    assert client.post("/edges/new/", {"name": "first"}).status_code == 302
    refused = client.post("/edges/new/", {"name": "second"})
    assert refused.status_code == 403 and not Edge.objects.filter(name="second").exists()
    assert "You cannot add more edges" in refused.content.decode()
    assert 'href="/edges/new/"' not in client.get("/").content.decode()
    # Site admins are not limited.
    assert client_for(users["root"]).post("/edges/new/", {"name": "admins-own"}).status_code == 302
    settings.RADICAL_EDGE = {**settings.RADICAL_EDGE, "USER_EDGES_MAX": 0}
    page = client_for(users["vera"]).get("/").content.decode()
    assert "Adding edges yourself is turned off" in page or 'href="/edges/new/"' not in page


# --- admin ---------------------------------------------------------------------------------------


def test_admin_edge_token_page_has_copy_buttons_and_the_agent_command(users):
    admin = client_for(users["root"])
    page = admin.post("/admin/bridge_app/edgetoken/add/", {"edge_name": "polaris", "owner": users["olga"].pk,
                                                            "note": ""}).content.decode()
    assert re.search(r"rde_[A-Za-z0-9_-]{40,}", page)
    assert 'data-copy="token-1"' in page and 'data-copy="command-1"' in page
    assert "radical-edge-service --url http://testserver --token-file ~/.radical/edge.token" in page


def test_admin_filters_proxied_calls_by_user_edge_plugin_and_caller(users, edge):
    now = timezone.now()
    rows = [
        CallRecord(at=now, username="uma", token_id=None, edge="hpc1", plugin="psij", method="GET",
                   path="status/x/y", status=200, duration_ms=1.0),
        CallRecord(at=now - timedelta(seconds=1), username="olga", token_id=7, edge="hpc1", plugin="sysinfo",
                   method="GET", path="metrics/SID-OF-A-PROGRAM", status=200, duration_ms=1.0),
    ]
    CallRecord.objects.bulk_create(rows)
    admin = client_for(users["root"])
    base = "/admin/bridge_app/callrecord/"
    programs = admin.get(base, {"via": "token"}).content.decode()
    assert "SID-OF-A-PROGRAM" in programs and "status/x/y" not in programs
    portal = admin.get(base, {"via": "portal"}).content.decode()
    assert "status/x/y" in portal and "SID-OF-A-PROGRAM" not in portal
    assert "status/x/y" not in admin.get(base, {"user": "olga"}).content.decode()
    assert "status/x/y" in admin.get(base, {"plugin": "psij", "edge": "hpc1"}).content.decode()
    assert "portal/css/admin.css" in programs  # wide lists scroll inside their box
