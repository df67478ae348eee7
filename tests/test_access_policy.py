"""The access policy read two ways must give one answer.

The proxy, the event stream and MCP decide from the in-process directory (a token's
cached principal and an edge's cached grants); the REST API, the portal and notifications
from the database (``selectors``). Both apply ``bridge_app.access.policy``. Over a matrix of
users (site admin, owners, direct and group grants of both roles, overlapping grants, no
grant, an inactive user), edges (online, offline, suspended, ownerless) and token scopes
(full, read), every reading must agree: the role, whether the edge is visible, whether it
is managed, and what the real proxy answers for a read-only and a writing route.
"""

from __future__ import annotations

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group

from bridge_app.access import policy
from bridge_app.api.permissions import IsEdgeManager
from bridge_app.calls import throttling
from bridge_app.core.directory import directory
from bridge_app.domain import selectors, services
from bridge_app.models import ApiToken, Edge
from bridge_app.notifications.filters import RoleCache
from bridge_app.observability import audit
from bridge_app.streams import sse
from radical_edge_site.asgi import application
from tests.test_access_proxy import Agent

pytestmark = pytest.mark.django_db(transaction=True)

PLUGINS = [{"name": "jobs", "version": "1", "routes": [
    {"method": "GET", "path": "status", "readonly": True},
    {"method": "POST", "path": "submit", "readonly": False},
]}]

# The roles the matrix must produce, whoever reads them: (user, edge) -> role.
EXPECTED = {
    ("root", "e-online"): "admin", ("root", "e-offline"): "admin", ("root", "e-suspended"): "admin",
    ("root", "e-orphan"): "admin",
    ("olga", "e-online"): "owner", ("olga", "e-suspended"): "owner", ("olga", "e-offline"): "viewer",
    # vera: a direct viewer grant and her team's user grant: the stronger wins.
    ("vera", "e-online"): "user", ("vera", "e-offline"): "owner",
    ("uma", "e-online"): "user", ("uma", "e-offline"): "viewer", ("uma", "e-suspended"): "user",
    ("uma", "e-orphan"): "viewer",
    ("gus", "e-online"): "user", ("gus", "e-offline"): "viewer", ("gus", "e-orphan"): "viewer",
}
USERS = ("root", "olga", "vera", "uma", "gus", "stranger", "gone")
EDGES = ("e-online", "e-offline", "e-suspended", "e-orphan")


@pytest.fixture(autouse=True)
def fresh_state():
    channel_layers.backends.clear()
    directory.invalidate("all", None)
    audit.buffer.take()
    throttling.install()
    yield
    channel_layers.backends.clear()
    audit.buffer.take()


def _world(django_user_model) -> tuple[dict, dict, str]:
    make = django_user_model.objects.create_user
    users = {name: make(name) for name in USERS if name != "root"}
    users["root"] = django_user_model.objects.create_superuser("root")
    team, ops = Group.objects.create(name="team"), Group.objects.create(name="ops")
    users["vera"].groups.add(team)
    users["uma"].groups.add(ops)
    users["gus"].groups.add(team, ops)
    edge_tokens = {}
    for name, owner in (("e-online", "olga"), ("e-offline", "vera"), ("e-suspended", "olga"), ("e-orphan", None)):
        token, plaintext = services.edge_token_create(name=name, owner=users[owner] if owner else None)
        edge_tokens[name] = (token.edge, plaintext)
    edges = {name: edge for name, (edge, _) in edge_tokens.items()}
    grant = services.grant_set
    grant(edge=edges["e-online"], role="viewer", user=users["vera"])
    grant(edge=edges["e-online"], role="user", user=users["uma"])
    grant(edge=edges["e-online"], role="user", group=team)
    grant(edge=edges["e-online"], role="viewer", group=ops)
    grant(edge=edges["e-online"], role="user", user=users["gone"])
    grant(edge=edges["e-offline"], role="viewer", user=users["olga"])
    grant(edge=edges["e-offline"], role="viewer", group=ops)
    grant(edge=edges["e-suspended"], role="user", user=users["uma"])
    grant(edge=edges["e-orphan"], role="viewer", group=ops)
    grant(edge=edges["e-orphan"], role="viewer", user=users["uma"])
    services.edge_suspend(edge=edges["e-suspended"])
    users["gone"].is_active = False
    users["gone"].save()
    return users, edges, edge_tokens["e-online"][1]


async def _connect(edge_token: str) -> WebsocketCommunicator:
    """A scripted agent's connection to the edge, registered (its hello answered)."""
    comm = WebsocketCommunicator(application, "/register",
                                 headers=[(b"authorization", f"Bearer {edge_token}".encode())])
    assert (await comm.connect())[0]
    await comm.send_json_to({"type": "hello", "protocol": 1, "agent_version": "t", "host": {}, "plugins": PLUGINS})
    assert (await comm.receive_json_from(timeout=5))["type"] == "welcome"
    return comm


async def test_cached_and_database_answers_agree(django_user_model):
    users, _, online_token = await sync_to_async(_world)(django_user_model)
    agent = Agent(await _connect(online_token))
    tokens = {}
    for name in USERS:
        for scope in (ApiToken.Scope.FULL, ApiToken.Scope.READ):
            tokens[name, scope] = (await sync_to_async(services.api_token_create)(user=users[name], scope=scope))[1]

    checked = 0
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                                     base_url="http://127.0.0.1") as http:
            for name in USERS:
                user = await sync_to_async(type(users[name]).objects.get)(pk=users[name].pk)
                db_visible = await sync_to_async(
                    lambda u=user: set(selectors.edge_list_for_user(user=u).values_list("name", flat=True)))()
                for scope in (ApiToken.Scope.FULL, ApiToken.Scope.READ):
                    token = tokens[name, scope]
                    principal = await directory.principal(token)
                    assert (principal is None) == (name == "gone")
                    names = set(await sync_to_async(sse._edge_names_for)(principal)) if principal else set()
                    for edge_name in EDGES:
                        edge = await sync_to_async(Edge.objects.get)(name=edge_name)
                        entry = await directory.edge(edge_name)
                        cached = entry.role_for(principal) if principal is not None else None
                        db = await sync_to_async(selectors.edge_role_for_user)(user=user, edge=edge)
                        notified = await sync_to_async(RoleCache().role)(user, edge_name)
                        want = EXPECTED.get((name, edge_name))
                        where = (name, scope, edge_name)
                        assert cached == db == notified == want, (where, cached, db, notified, want)
                        assert (edge_name in db_visible) == policy.may_see(want), where
                        if principal is not None:
                            assert (edge_name in names) == policy.may_see(want), where
                        assert entry.suspended == edge.suspended == (edge_name == "e-suspended")
                        request = type("R", (), {"user": user})()
                        allowed = await sync_to_async(IsEdgeManager().has_object_permission)(request, None, edge)
                        assert allowed == policy.manages(want), where
                        managed = await sync_to_async(selectors.edge_get_managed_by)(user=user, name=edge_name)
                        assert (managed is not None) == policy.manages(want), where

                        # What the proxy answers, from the cache, against the database's role.
                        for method, route, writes in (("GET", "status", False), ("POST", "submit", True)):
                            r = await http.request(method, f"/{edge_name}/jobs/{route}",
                                                   headers={"Authorization": f"Bearer {token}",
                                                            "X-Request-Timeout": "10"})
                            if principal is None:
                                status = 401
                            elif not policy.may_see(db):
                                status = 404
                            elif edge_name != "e-online" and entry.plugins.get("jobs") is None:
                                status = 404  # an edge that never connected has no plugins
                            elif writes and (not policy.may_write(db) or not policy.token_may_write(scope)):
                                status = 403
                            else:
                                status = 200
                            assert r.status_code == status, (where, method, r.status_code, r.text)
                            checked += 1
    finally:
        await agent.close()
    assert checked == len(USERS) * 2 * len(EDGES) * 2


async def test_suspended_edge_with_plugins_is_refused_after_the_access_checks(django_user_model):
    """A suspended edge that once connected keeps its plugins: the proxy refuses callers
    without a role (404) and viewers' writes (403) before saying it is suspended (503)."""
    users, edges, online_token = await sync_to_async(_world)(django_user_model)
    comm = await _connect(online_token)
    await sync_to_async(services.edge_suspend)(edge=edges["e-online"])
    await comm.disconnect()
    directory.invalidate("all", None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://127.0.0.1") as http:
        for name, scope, method, route, status in (
            ("stranger", ApiToken.Scope.FULL, "GET", "status", 404),
            ("vera", ApiToken.Scope.READ, "POST", "submit", 403),
            ("vera", ApiToken.Scope.FULL, "POST", "submit", 503),
            ("olga", ApiToken.Scope.FULL, "GET", "status", 503),
        ):
            token = (await sync_to_async(services.api_token_create)(user=users[name], scope=scope))[1]
            r = await http.request(method, f"/e-online/jobs/{route}", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status, (name, scope, route, r.text)
            if status == 503:
                assert r.json()["error"] == "edge_suspended"


def test_the_policy_speaks_the_models_words():
    from bridge_app.models import EdgeGrant

    assert set(EdgeGrant.Role.values) == {policy.USER, policy.VIEWER}
    assert set(ApiToken.Scope.values) == {policy.SCOPE_READ, policy.SCOPE_FULL}
    assert policy.strongest_grant([None, policy.VIEWER, policy.USER, policy.VIEWER]) == policy.USER
    assert policy.strongest_grant([None, None]) is None
