"""The proxy path's metrics are tallied as plain numbers and folded into prometheus_client's
values before a scrape (observability/metrics.py): what a scrape shows must be exactly what
counting each call directly would have shown."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bridge_app.observability import metrics


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_tallied_counts_reach_the_metrics_only_when_folded_and_then_exactly():
    metrics.fold()
    requests_before = _sample("radical_edge_proxy_requests_total", method="GET", status="2xx")
    inflight_before = _sample("radical_edge_proxy_inflight")
    count_before = _sample("radical_edge_proxy_request_seconds_count")
    sum_before = _sample("radical_edge_proxy_request_seconds_sum")
    fast_before = _sample("radical_edge_proxy_request_seconds_bucket", le="0.001")
    slow_before = _sample("radical_edge_proxy_request_seconds_bucket", le="0.5")
    counter = metrics.child(metrics.REQUESTS, "GET", "2xx")
    for _ in range(5):
        metrics.tally(counter)
    metrics.tally(metrics.INFLIGHT, 3)
    metrics.tally(metrics.INFLIGHT, -1)
    for seconds in (0.0004, 0.001, 0.3, 100.0):  # 0.001 lies on a bound: "le" includes it
        metrics.tally_latency(seconds)
    # Not yet visible: on an event loop the fold waits for its timer (or a scrape).
    assert _sample("radical_edge_proxy_requests_total", method="GET", status="2xx") == requests_before
    metrics.fold()
    assert _sample("radical_edge_proxy_requests_total", method="GET", status="2xx") == requests_before + 5
    assert _sample("radical_edge_proxy_inflight") == inflight_before + 2
    assert _sample("radical_edge_proxy_request_seconds_count") == count_before + 4
    assert abs(_sample("radical_edge_proxy_request_seconds_sum") - sum_before - 100.3014) < 1e-9
    assert _sample("radical_edge_proxy_request_seconds_bucket", le="0.001") == fast_before + 2
    assert _sample("radical_edge_proxy_request_seconds_bucket", le="0.5") == slow_before + 3
    metrics.fold()  # nothing left: folding again changes nothing
    assert _sample("radical_edge_proxy_requests_total", method="GET", status="2xx") == requests_before + 5


def test_folded_latencies_expose_as_observed_ones_do():
    """The fold writes a histogram's buckets and sum directly: the exposition equals that of
    a histogram fed by ``observe`` with the same values."""
    values = [0.0001, 0.0005, 0.0007, 0.002, 0.02, 0.6, 3.0, 59.0, 61.0, 0.0]
    registry = CollectorRegistry()
    observed = Histogram("h", "h", buckets=metrics.LATENCY._upper_bounds, registry=registry)
    for v in values:
        observed.observe(v)
    before = {b: _sample("radical_edge_proxy_request_seconds_bucket", le=b)
              for b in ("0.0005", "0.002", "0.5", "60.0", "+Inf")}
    metrics.fold()
    for v in values:
        metrics.tally_latency(v)
    metrics.fold()
    text = generate_latest(registry).decode()
    for bound, was in before.items():
        line = next(x for x in text.splitlines() if x.startswith(f'h_bucket{{le="{bound}"}}'))
        assert _sample("radical_edge_proxy_request_seconds_bucket", le=bound) - was == float(line.split()[-1])


async def test_on_an_event_loop_the_tally_folds_by_itself_within_the_interval(monkeypatch):
    monkeypatch.setattr(metrics, "FOLD_INTERVAL", 0.05)
    metrics.fold()
    counter = metrics.child(metrics.ERRORS, "tally_test")
    before = _sample("radical_edge_proxy_errors_total", error="tally_test")
    metrics.tally(counter, 2)
    assert _sample("radical_edge_proxy_errors_total", error="tally_test") == before
    for _ in range(100):
        await asyncio.sleep(0.02)
        if _sample("radical_edge_proxy_errors_total", error="tally_test") == before + 2:
            break
    assert _sample("radical_edge_proxy_errors_total", error="tally_test") == before + 2


def test_off_an_event_loop_a_tally_counts_at_once():
    counter = metrics.child(metrics.ERRORS, "tally_sync")
    before = _sample("radical_edge_proxy_errors_total", error="tally_sync")
    metrics.fold()
    metrics.tally(counter)
    assert _sample("radical_edge_proxy_errors_total", error="tally_sync") == before + 1

