"""Site admins: edges and tokens in Django admin, and the management commands."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from bridge_app.access.tokens import token_digest
from bridge_app.domain import services
from bridge_app.models import ApiToken, Edge, EdgeToken, PluginRegistration

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.org", "pw-" + "x" * 12)
    client.force_login(admin)
    return client


def run(*args) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_edge_token_create_prints_the_token_last_and_stores_only_its_digest(django_user_model):
    django_user_model.objects.create_user("alice")
    lines = run("edge_token_create", "polaris-login", "--owner", "alice")
    token = lines[-1]
    assert token.startswith("rde_") and len(token) > 40
    row = EdgeToken.objects.get(edge__name="polaris-login")
    assert row.digest == token_digest(token) and token not in (row.prefix, row.digest)
    assert row.edge.owner.username == "alice"
    assert run("edge_token_create", "polaris-login")[-1] != token  # a second token for the same edge


def test_edge_token_create_refuses_bad_and_reserved_names_and_unknown_owners():
    for name in ("Bad Name", "admin", "edges", "-x"):
        with pytest.raises(CommandError):
            call_command("edge_token_create", name, stdout=StringIO())
    with pytest.raises(CommandError, match="no user"):
        call_command("edge_token_create", "fine", "--owner", "ghost", stdout=StringIO())
    assert not Edge.objects.exists()


def test_api_token_create_does_not_create_users_silently(django_user_model):
    with pytest.raises(CommandError, match="no user named 'bob'"):
        call_command("api_token_create", "bob", stdout=StringIO())
    lines = run("api_token_create", "bob", "--create-user", "--read-only", "--expires", "7")
    token = ApiToken.objects.get(user__username="bob")
    assert lines[-1].startswith("rda_") and token.digest == token_digest(lines[-1])
    assert token.scope == "read" and token.expires_at > timezone.now()


def test_edge_token_revoke_by_prefix_and_for_a_whole_edge():
    _, first = services.edge_token_create(name="hpc1")
    _, second = services.edge_token_create(name="hpc1")
    run("edge_token_revoke", first[:12])
    assert EdgeToken.objects.get(digest=token_digest(first)).revoked_at is not None
    assert EdgeToken.objects.get(digest=token_digest(second)).revoked_at is None
    run("edge_token_revoke", "hpc1", "--all")
    assert not EdgeToken.objects.active().exists()
    with pytest.raises(CommandError):
        call_command("edge_token_revoke", "hpc1", "--all", stdout=StringIO())


def test_edge_sweep_marks_edges_with_stale_heartbeats_offline():
    stale = Edge.objects.create(name="stale", status=Edge.Status.ONLINE, channel_name="x",
                                last_seen=timezone.now() - Edge.stale_after() * 2)
    fresh = Edge.objects.create(name="fresh", status=Edge.Status.ONLINE, channel_name="y", last_seen=timezone.now())
    assert run("edge_sweep") == ["marked offline: stale"]
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == "offline" and fresh.status == "online"


def test_admin_lists_edges_with_state_host_version_and_plugins(admin_client):
    edge = Edge.objects.create(name="frontier-login", status=Edge.Status.ONLINE, channel_name="c",
                               last_seen=timezone.now(), host="login1.frontier", agent_version="0.1.0")
    PluginRegistration.objects.create(edge=edge, name="psij", version="1")
    Edge.objects.create(name="dark-site")
    page = admin_client.get("/admin/bridge_app/edge/").content.decode()
    for text in ("frontier-login", "login1.frontier", "0.1.0", "psij", "dark-site"):
        assert text in page
    assert page.count('alt="True"') >= 1 and page.count('alt="False"') >= 1  # online / offline icons


def test_admin_issues_a_token_shown_once_and_revokes_tokens(admin_client):
    edge = Edge.objects.create(name="aurora-login")
    page = admin_client.post("/admin/bridge_app/edge/", {"action": "issue_token", "_selected_action": [edge.pk]})
    token = re.search(r"(rde_[A-Za-z0-9_-]{40,})", page.content.decode()).group(1)
    row = EdgeToken.objects.get(edge=edge)
    assert row.digest == token_digest(token)
    assert token not in admin_client.get(f"/admin/bridge_app/edgetoken/{row.pk}/change/").content.decode()
    admin_client.post("/admin/bridge_app/edgetoken/", {"action": "revoke", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.revoked_at is not None


def test_admin_adds_an_edge_token_for_a_new_edge(admin_client, django_user_model):
    owner = django_user_model.objects.create_user("carol")
    page = admin_client.post("/admin/bridge_app/edgetoken/add/",
                             {"edge_name": "new-edge", "owner": owner.pk, "note": "from admin"})
    token = re.search(r"(rde_[A-Za-z0-9_-]{40,})", page.content.decode()).group(1)
    assert EdgeToken.objects.get(digest=token_digest(token)).edge.owner == owner
