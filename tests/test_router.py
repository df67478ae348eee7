"""Route templates (edge_agent.router), shared by the agent and the bridge."""

from __future__ import annotations

import pytest

from edge_agent.router import MethodNotAllowed, RouteNotFound, Router, router_from_manifest


@pytest.fixture
def router() -> Router:
    r = Router()
    r.add("GET", "version", "version")
    r.add("GET", "status/{sid}/{job_id}", "status")
    r.add("POST", "cancel/{sid}/{job_id}", "cancel")
    r.add("GET", "jobs/list", "list")
    r.add("GET", "jobs/{job_id}", "job")
    r.add("GET", "files/{sid}/{path:path}", "files")
    r.add("GET", "{anything}", "catchall")
    return r


def test_params_are_extracted(router):
    route, params = router.match("GET", "status/abc/42")
    assert route.target == "status" and params == {"sid": "abc", "job_id": "42"}


def test_literal_segments_win_over_parameters(router):
    assert router.match("GET", "jobs/list")[0].target == "list"
    assert router.match("GET", "jobs/7")[0].target == "job"
    assert router.match("GET", "version")[0].target == "version"
    assert router.match("GET", "other")[0].target == "catchall"


def test_greedy_path_parameter_takes_the_rest(router):
    route, params = router.match("GET", "files/s1/a/b/c.txt")
    assert route.target == "files" and params == {"sid": "s1", "path": "a/b/c.txt"}


def test_unknown_path_and_wrong_method(router):
    with pytest.raises(RouteNotFound):
        router.match("GET", "status/only-one")
    with pytest.raises(MethodNotAllowed) as exc:
        router.match("DELETE", "cancel/s/1")
    assert exc.value.allowed == ["POST"]


def test_empty_parameter_segments_do_not_match(router):
    with pytest.raises(RouteNotFound):
        router.match("GET", "status//42")


def test_head_is_served_by_get(router):
    assert router.match("HEAD", "version")[0].target == "version"


def test_readonly_defaults_to_safe_methods_and_can_be_declared():
    r = Router()
    assert r.add("GET", "a").readonly is True
    assert r.add("POST", "b").readonly is False
    assert r.add("POST", "c", readonly=True).readonly is True


@pytest.mark.parametrize("template", ["a/{b", "a/{not an id}", "{p:path}/x", "a/b}c"])
def test_bad_templates_are_rejected(template):
    with pytest.raises(ValueError):
        Router().add("GET", template)


def test_bridge_side_router_from_a_manifest_skips_garbage():
    r = router_from_manifest([
        {"method": "GET", "path": "metrics/{sid}", "readonly": True},
        {"method": "POST", "path": "submit/{sid}"},
        {"method": "BREW", "path": "coffee"},
        {"path": "no-method"},
        "not a dict",
        {"method": "GET", "path": "bad/{x"},
    ])
    assert [(x.method, x.template, x.readonly) for x in r.routes] == [
        ("GET", "metrics/{sid}", True), ("POST", "submit/{sid}", False)]


def test_head_matches_a_get_route_with_a_path_parameter_too():
    r = Router()
    r.add("GET", "download/{path:path}", "dl")
    route, params = r.match("HEAD", "download/home/alice/x.dat")
    assert route.target == "dl" and params == {"path": "home/alice/x.dat"}
