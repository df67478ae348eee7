"""Prometheus metrics and health endpoints of a running bridge."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.e2e


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}{{{want}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    match = re.search(pattern, text, re.M)
    assert match, f"{name}{labels} not in metrics"
    return float(match.group(1))


def test_metrics_count_calls_errors_and_connected_edges(edge_setup):
    s = edge_setup()
    with s.bridge.client(s.token) as c:
        for _ in range(3):
            assert c.get(f"/{s.edge}/echo/ping").status_code == 200
        assert c.get("/nosuch/echo/ping").status_code == 404
    text = httpx.get(f"{s.bridge.url}/metrics").text
    assert sample(text, "radical_edge_proxy_requests_total", method="GET", status="2xx") >= 3
    assert sample(text, "radical_edge_proxy_errors_total", error="unknown_edge") >= 1
    assert sample(text, "radical_edge_edges_connected") == 1
    assert sample(text, "radical_edge_proxy_inflight") == 0
    assert sample(text, "radical_edge_frames_total", direction="out", type="request") >= 3
    assert sample(text, "radical_edge_proxy_request_seconds_count") >= 4


def test_metrics_need_the_token_when_one_is_set(bridge_factory):
    bridge = bridge_factory(env={"RADICAL_METRICS_TOKEN": "s3cret-metrics"})
    assert httpx.get(f"{bridge.url}/metrics").status_code == 403
    r = httpx.get(f"{bridge.url}/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert r.status_code == 200 and "radical_edge_proxy_requests_total" in r.text


def test_health_endpoints(bridge_factory):
    bridge = bridge_factory()
    assert httpx.get(f"{bridge.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{bridge.url}/readyz").json()
    assert ready == {"status": "ok", "checks": {"database": "ok", "channel_layer": "ok"}}
