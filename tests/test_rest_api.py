"""REST resources and the OpenAPI schema."""

from __future__ import annotations

import pytest
from django.utils import timezone

from bridge_app.domain import services
from bridge_app.models import Edge, PluginRegistration

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client, django_user_model):
    user = django_user_model.objects.create_user("dana")
    _, token = services.api_token_create(user=user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    edge = Edge.objects.create(name="perlmutter", owner=user, status=Edge.Status.ONLINE, channel_name="c",
                               last_seen=timezone.now(), host="login01", agent_version="0.1.0")
    PluginRegistration.objects.create(edge=edge, name="sysinfo", version="1.0.0",
                                      routes=[{"method": "GET", "path": "metrics/{sid}", "readonly": True}])
    return client


def test_openapi_schema_documents_the_proxy_and_the_resources(api):
    schema = api.get("/api/v1/schema/").json()
    paths = schema["paths"]
    assert "/{edge}/{plugin}/{route}" in paths and "/api/v1/edges/{edge}/{plugin}/{route}" in paths
    assert {"get", "post", "put", "patch", "delete"} <= set(paths["/{edge}/{plugin}/{route}"])
    assert "504" in paths["/{edge}/{plugin}/{route}"]["get"]["responses"]
    assert any(p.startswith("/api/v1/edges/") for p in paths)
    assert "/edge/list" in paths and "/edges" in paths
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_edge_resource_shows_state_and_plugins(api):
    listing = api.get("/api/v1/edges/").json()
    rows = listing["results"] if isinstance(listing, dict) else listing
    assert [e["name"] for e in rows] == ["perlmutter"]
    edge = api.get("/api/v1/edges/perlmutter/").json()
    assert edge["online"] is True and edge["host"] == "login01" and edge["owner"] == "dana"
    assert edge["plugins"][0]["name"] == "sysinfo" and edge["plugins"][0]["routes"][0]["readonly"] is True
    missing = api.get("/api/v1/edges/nope/")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "detail"}


def test_original_edge_list_and_edges_shapes(api):
    data = api.post("/edge/list").json()["data"]
    assert set(data) == {"bridge", "edges"} and data["bridge"]["url"].startswith("http")
    plugin = data["edges"]["perlmutter"]["plugins"]["sysinfo"]
    assert plugin["namespace"] == "/perlmutter/sysinfo" and plugin["version"] == "1.0.0"
    edges = api.get("/edges").json()
    assert edges["total"] == 1
    row = edges["edges"][0]
    assert row["name"] == "perlmutter" and row["connected"] is True and row["plugins"] == ["sysinfo"]
    assert row["plugin_count"] == 1


def test_offline_edges_are_in_edges_but_not_in_edge_list(api):
    Edge.objects.filter(name="perlmutter").update(status=Edge.Status.OFFLINE)
    assert api.post("/edge/list").json()["data"]["edges"] == {}
    assert api.get("/edges").json()["edges"][0]["connected"] is False
