"""Access control of the REST API, the portal's tokens and sharing pages, and the
operators' commands — everything but the proxy path (test_access_proxy.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from bridge_app.domain import services
from bridge_app.domain.selectors import edge_list_for_user, edge_role_for_user
from bridge_app.models import ActionRecord, ApiToken, CallRecord, Edge, EdgeGrant

pytestmark = pytest.mark.django_db


@pytest.fixture
def users(django_user_model):
    # No passwords: hashing them is slow, and force_login and tokens need none.
    make = django_user_model.objects.create_user
    people = {name: make(name) for name in ("olga", "vera", "uma", "gus", "stranger")}
    people["root"] = django_user_model.objects.create_superuser("root", email="", password=None)
    return people


@pytest.fixture
def edge(users) -> Edge:
    token, _ = services.edge_token_create(name="hpc1", owner=users["olga"])
    services.grant_set(edge=token.edge, role="viewer", user=users["vera"])
    services.grant_set(edge=token.edge, role="user", user=users["uma"])
    team = Group.objects.create(name="team")
    users["gus"].groups.add(team)
    services.grant_set(edge=token.edge, role="viewer", group=team)
    services.edge_token_create(name="other", owner=users["stranger"])
    return token.edge


def api(user, **token_kwargs) -> Client:
    _, plaintext = services.api_token_create(user=user, **token_kwargs)
    return Client(HTTP_AUTHORIZATION=f"Bearer {plaintext}")


def error_of(response) -> str:
    return response.json()["error"]


# --- visibility ---------------------------------------------------------------------------


def test_each_caller_sees_only_the_edges_they_may_use(users, edge):
    seen = {name: sorted(e.name for e in edge_list_for_user(user=u)) for name, u in users.items()}
    assert seen == {"olga": ["hpc1"], "vera": ["hpc1"], "uma": ["hpc1"], "gus": ["hpc1"],
                    "stranger": ["other"], "root": ["hpc1", "other"]}
    roles = {name: edge_role_for_user(user=u, edge=edge) for name, u in users.items()}
    assert roles == {"olga": "owner", "vera": "viewer", "uma": "user", "gus": "viewer", "stranger": None,
                     "root": "admin"}


def test_a_user_in_two_sharing_groups_sees_the_edge_once_with_the_strongest_role(users, edge):
    second = Group.objects.create(name="second")
    users["gus"].groups.add(second)
    services.grant_set(edge=edge, role="user", group=second)
    assert [e.name for e in edge_list_for_user(user=users["gus"])] == ["hpc1"]
    assert edge_role_for_user(user=users["gus"], edge=edge) == "user"


def test_inactive_users_see_nothing(users, edge):
    users["olga"].is_active = False
    users["olga"].save()
    assert list(edge_list_for_user(user=users["olga"])) == []


@pytest.mark.parametrize("who,visible", [("olga", ["hpc1"]), ("vera", ["hpc1"]), ("stranger", ["other"]),
                                         ("root", ["hpc1", "other"])])
def test_every_listing_shows_the_same_visible_edges(users, edge, who, visible):
    client = api(users[who])
    assert sorted(e["name"] for e in client.get("/api/v1/edges/").json()) == visible
    assert sorted(e["name"] for e in client.get("/edges").json()["edges"]) == visible
    Edge.objects.update(status="online", last_seen=timezone.now(), channel_name="x")
    assert sorted(client.post("/edge/list").json()["data"]["edges"]) == visible
    portal = Client()
    portal.force_login(users[who])
    page = portal.get("/").content.decode()
    for name in ("hpc1", "other"):
        assert (f"<td>{name}</td>" in page) == (name in visible)


def test_unknown_and_forbidden_edges_answer_alike(users, edge):
    client = api(users["stranger"])
    for suffix in ("", "/grants", "/calls"):
        hidden = client.get(f"/api/v1/edges/hpc1{suffix}")
        unknown = client.get(f"/api/v1/edges/nosuch{suffix}")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json() == unknown.json()
    for action in ("suspend", "resume"):
        assert client.post(f"/api/v1/edges/hpc1/{action}").status_code == 404


# --- managing an edge ---------------------------------------------------------------------


def test_only_the_owner_or_an_admin_may_suspend_resume_and_share(users, edge):
    for who in ("vera", "uma", "gus"):
        client = api(users[who])
        assert error_of(client.post("/api/v1/edges/hpc1/suspend")) == "forbidden"
        assert client.get("/api/v1/edges/hpc1/grants").status_code == 403
        r = client.post("/api/v1/edges/hpc1/grants", {"user": "stranger", "role": "user"},
                        content_type="application/json")
        assert r.status_code == 403
    assert not Edge.objects.get(name="hpc1").suspended
    assert not EdgeGrant.objects.filter(user=users["stranger"]).exists()

    owner = api(users["olga"])
    r = owner.post("/api/v1/edges/hpc1/suspend")
    assert r.status_code == 200 and r.json()["suspended"] is True
    assert Edge.objects.get(name="hpc1").suspended
    assert api(users["root"]).post("/api/v1/edges/hpc1/resume").json()["suspended"] is False
    actions = list(ActionRecord.objects.filter(edge="hpc1", action__in=["edge_suspended", "edge_resumed"])
                   .order_by("at").values_list("action", "actor_name"))
    assert actions == [("edge_suspended", "olga"), ("edge_resumed", "root")]


def test_grants_through_rest(users, edge):
    owner = api(users["olga"])
    r = owner.post("/api/v1/edges/hpc1/grants", {"user": "stranger", "role": "viewer"},
                   content_type="application/json")
    assert r.status_code == 201 and r.json()["user"] == "stranger" and r.json()["role"] == "viewer"
    assert "hpc1" in [e["name"] for e in api(users["stranger"]).get("/api/v1/edges/").json()]
    # Granting again replaces the role.
    owner.post("/api/v1/edges/hpc1/grants", {"user": "stranger", "role": "user"}, content_type="application/json")
    assert EdgeGrant.objects.get(edge=edge, user=users["stranger"]).role == "user"
    listing = owner.get("/api/v1/edges/hpc1/grants").json()
    assert {(g["user"], g["group"], g["role"]) for g in listing} == {
        ("vera", None, "viewer"), ("uma", None, "user"), (None, "team", "viewer"), ("stranger", None, "user")}
    bad = [{"role": "viewer"}, {"user": "stranger", "group": "team", "role": "user"},
           {"user": "nobody", "role": "user"}, {"user": "stranger", "role": "admin"}, {"user": "olga", "role": "user"}]
    for body in bad:
        r = owner.post("/api/v1/edges/hpc1/grants", body, content_type="application/json")
        assert r.status_code == 400 and error_of(r), body
    assert owner.delete("/api/v1/edges/hpc1/grants?user=stranger").status_code == 204
    assert owner.delete("/api/v1/edges/hpc1/grants?group=team").status_code == 204
    assert owner.delete("/api/v1/edges/hpc1/grants?user=stranger").status_code == 404
    assert owner.delete("/api/v1/edges/hpc1/grants").status_code == 400
    assert "hpc1" not in [e["name"] for e in api(users["stranger"]).get("/api/v1/edges/").json()]
    kinds = list(ActionRecord.objects.filter(edge="hpc1", actor_name="olga").values_list("action", "target"))
    assert ("grant_set", "stranger") in kinds and ("grant_removed", "group team") in kinds


def test_only_site_admins_disconnect_edges_and_read_the_whole_audit_trail(users, edge):
    for who in ("olga", "uma", "stranger"):
        assert error_of(api(users[who]).post("/api/v1/edges/hpc1/disconnect")) == "forbidden"
        assert api(users[who]).get("/api/v1/audit/calls").status_code == 403
    root = api(users["root"])
    r = root.post("/api/v1/edges/hpc1/disconnect", {"retry": False}, content_type="application/json")
    assert r.status_code == 200 and r.json() == {"disconnected": False}  # it was not connected
    assert root.get("/api/v1/audit/calls?edge=hpc1").json()["results"] == []


def test_owners_see_who_used_their_edge(users, edge):
    for i, who in enumerate(["uma", "vera", "uma"]):
        CallRecord.objects.create(at=timezone.now(), username=who, edge="hpc1", plugin="jobs", method="GET",
                                  path=f"status/{i}", status=200, duration_ms=1.0)
    CallRecord.objects.create(at=timezone.now(), username="x", edge="other", plugin="p", method="GET", path="q",
                              status=200, duration_ms=1.0)
    rows = api(users["olga"]).get("/api/v1/edges/hpc1/calls").json()["results"]
    assert [r["path"] for r in rows] == ["status/2", "status/1", "status/0"]
    assert api(users["uma"]).get("/api/v1/edges/hpc1/calls").status_code == 403


# --- tokens -------------------------------------------------------------------------------


def test_people_list_and_revoke_only_their_own_tokens(users):
    mine, _ = services.api_token_create(user=users["uma"], name="laptop")
    theirs, _ = services.api_token_create(user=users["vera"], name="other")
    client = api(users["uma"], name="cli")
    listing = client.get("/api/v1/tokens/").json()
    assert {t["name"] for t in listing} == {"laptop", "cli"}
    assert all("digest" not in t and len(t["prefix"]) == 12 for t in listing)
    assert client.delete(f"/api/v1/tokens/{theirs.pk}").status_code == 404
    assert client.delete(f"/api/v1/tokens/{mine.pk}").status_code == 204
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.revoked_at is not None and theirs.revoked_at is None
    assert client.post("/api/v1/tokens/", {}).status_code == 405  # issued in the portal only


def test_read_only_tokens_cannot_change_anything_through_rest(users, edge):
    client = api(users["olga"], scope=ApiToken.Scope.READ)
    assert client.get("/api/v1/edges/hpc1/grants").status_code == 200
    own = ApiToken.objects.filter(user=users["olga"]).first()
    for method, path in [("post", "/api/v1/edges/hpc1/suspend"), ("post", "/api/v1/edges/hpc1/grants"),
                         ("delete", "/api/v1/edges/hpc1/grants?user=vera"), ("delete", f"/api/v1/tokens/{own.pk}")]:
        r = getattr(client, method)(path)
        assert r.status_code == 403 and r.json()["detail"] == "this API token is read-only", path


def test_rest_resources_are_throttled_with_retry_after(users, monkeypatch):
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "60/min", "user": "3/min"})
    cache.clear()
    try:
        client = api(users["uma"])
        codes = [client.get("/api/v1/edges/").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = client.get("/api/v1/edges/")
        assert r.json()["error"] == "rate_limited" and int(r["Retry-After"]) > 0
        assert api(users["vera"]).get("/api/v1/edges/").status_code == 200  # per user
    finally:
        cache.clear()


# --- portal -------------------------------------------------------------------------------


def test_portal_token_page_shows_a_new_token_once(users):
    client = Client(enforce_csrf_checks=True)
    assert client.get("/tokens/").status_code == 302  # login first
    client.force_login(users["uma"])
    page = client.get("/tokens/")
    csrf = page.cookies["csrftoken"].value
    assert client.post("/tokens/", {"name": "laptop", "scope": "read", "expires_in_days": 30}).status_code == 403
    posted = client.post("/tokens/", {"name": "laptop", "scope": "read", "expires_in_days": 30,
                                      "csrfmiddlewaretoken": csrf})
    # Post/redirect/get (issue 14): the POST answers a redirect, and the page it leads to
    # shows the secret, once, so a reload cannot issue a second token.
    assert posted.status_code == 302 and posted["Location"] == "/tokens/"
    r = client.get(posted["Location"])
    assert r.status_code == 200
    token = ApiToken.objects.get(user=users["uma"])
    plaintext = r.content.decode().split('id="new-token" type="text" value="', 1)[1].split('"', 1)[0]
    assert plaintext.startswith(token.prefix) and token.scope == "read"
    assert "no-store" in r["Cache-Control"]
    again = client.get("/tokens/").content.decode()
    assert plaintext not in again and token.prefix in again
    # Someone else's token cannot be revoked from here.
    theirs, _ = services.api_token_create(user=users["vera"])
    assert client.post(f"/tokens/{theirs.pk}/revoke/", {"csrfmiddlewaretoken": csrf}).status_code == 404
    assert client.post(f"/tokens/{token.pk}/revoke/", {"csrfmiddlewaretoken": csrf}).status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert ActionRecord.objects.filter(action="api_token_revoked", actor_name="uma").exists()


def test_portal_sharing_page_is_for_the_owner_and_admins(users, edge):
    client = Client()
    for who, status in [("stranger", 404), ("vera", 403), ("uma", 403), ("olga", 200), ("root", 200)]:
        client.force_login(users[who])
        assert client.get("/edges/hpc1/sharing/").status_code == status, who
        assert client.get("/edges/nosuch/sharing/").status_code == 404
    client.force_login(users["olga"])
    # Granting "user" hands over the agent's Unix account: it needs an explicit confirmation (issue 14).
    r = client.post("/edges/hpc1/sharing/", {"kind": "user", "name": "stranger", "role": "user"})
    assert r.status_code == 400 and not EdgeGrant.objects.filter(edge=edge, user=users["stranger"]).exists()
    r = client.post("/edges/hpc1/sharing/", {"kind": "user", "name": "stranger", "role": "user",
                                             "confirm_identity": "on"})
    assert r.status_code == 302
    assert EdgeGrant.objects.get(edge=edge, user=users["stranger"]).role == "user"
    r = client.post("/edges/hpc1/sharing/", {"kind": "group", "name": "nosuchgroup", "role": "user",
                                             "confirm_identity": "on"})
    assert r.status_code == 400 and b"There is no group" in r.content
    grant = EdgeGrant.objects.get(edge=edge, user=users["stranger"])
    assert client.post(f"/edges/hpc1/sharing/{grant.pk}/remove/").status_code == 302
    assert not EdgeGrant.objects.filter(pk=grant.pk).exists()
    assert client.post("/edges/hpc1/state/", {"action": "suspend"}).status_code == 302
    assert Edge.objects.get(name="hpc1").suspended
    assert client.post("/edges/hpc1/state/", {"action": "disconnect"}).status_code == 400  # admins only
    client.post("/edges/hpc1/state/", {"action": "resume"})
    assert not Edge.objects.get(name="hpc1").suspended
    client.force_login(users["vera"])
    assert client.post("/edges/hpc1/state/", {"action": "suspend"}).status_code == 403
    assert not Edge.objects.get(name="hpc1").suspended


def test_portal_pages_carry_a_strict_content_security_policy(users):
    client = Client()
    client.force_login(users["uma"])
    for path in ("/", "/tokens/", "/accounts/login/", "/admin/login/"):
        r = client.get(path)
        csp = r["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp, path
        assert r["X-Frame-Options"] == "DENY" and r["X-Content-Type-Options"] == "nosniff"
        assert r["Referrer-Policy"] == "same-origin"
        assert "<script>" not in r.content.decode()


# --- commands -----------------------------------------------------------------------------


def test_edge_grant_and_revoke_commands(users, edge, capsys):
    call_command("edge_grant", "hpc1", "stranger", "user")
    assert capsys.readouterr().out.strip().splitlines()[-1] == "stranger is now user on edge hpc1"
    call_command("edge_grant", "hpc1", "team", "user", "--group")
    assert EdgeGrant.objects.get(edge=edge, group__name="team").role == "user"
    call_command("edge_revoke", "hpc1", "stranger")
    call_command("edge_revoke", "hpc1", "team", "--group")
    assert not EdgeGrant.objects.filter(edge=edge, user=users["stranger"]).exists()
    for args in (["nosuch", "stranger", "user"], ["hpc1", "nobody", "user"], ["hpc1", "olga", "viewer"]):
        with pytest.raises(CommandError):
            call_command("edge_grant", *args)
    with pytest.raises(CommandError):
        call_command("edge_revoke", "hpc1", "stranger")
    assert ActionRecord.objects.filter(action="grant_set", actor_name="", target="stranger").exists()


def test_a_name_squatter_cannot_take_an_owned_edge(users, edge):
    with pytest.raises(CommandError, match="already belongs to olga"):
        call_command("edge_token_create", "hpc1", "--owner", "stranger")
    assert Edge.objects.get(name="hpc1").owner == users["olga"]
    # The owner (or no --owner: an admin's decision) may issue more tokens.
    call_command("edge_token_create", "hpc1", "--owner", "olga")
    assert edge.tokens.count() == 2


def test_api_token_create_command(users, capsys):
    call_command("api_token_create", "uma", "--read-only", "--expires", "7")
    plaintext = capsys.readouterr().out.strip().splitlines()[-1]
    token = ApiToken.objects.get(user=users["uma"])
    assert plaintext.startswith(token.prefix) and token.scope == "read" and token.expires_at is not None
    assert ActionRecord.objects.filter(action="api_token_issued", target=f"{token.prefix}…").exists()
