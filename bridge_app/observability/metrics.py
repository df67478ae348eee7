"""Prometheus metrics of a bridge process (prometheus_client), served at ``/metrics``.

Labels are bounded on purpose (method, status class, error code, frame type): no edge or
user names, which would make the series count grow with the site. Several worker
processes sharing one port (``radical-edge-bridge --workers N``) aggregate through
prometheus_client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set; processes
on ports of their own are simply scraped one by one (docs/OPERATIONS.md).

Access: with ``RADICAL_METRICS_TOKEN`` set, scrapers send it as a bearer token; without
it, only loopback clients may read the metrics.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from bisect import bisect_left
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

from ..access.tokens import bearer_from_header
from ..core import hooks

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REQUESTS = Counter("radical_edge_proxy_requests_total", "Proxied calls answered", ["method", "status"])
LATENCY = Histogram(
    "radical_edge_proxy_request_seconds", "Time from a proxied call's arrival to its answer",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ERRORS = Counter("radical_edge_proxy_errors_total", "Calls the bridge answered with an error itself", ["error"])
BYTES = Counter("radical_edge_proxy_bytes_total", "Body bytes carried through the proxy", ["direction"])
INFLIGHT = Gauge("radical_edge_proxy_inflight", "Proxied calls waiting for their edge",
                 multiprocess_mode="livesum")
EDGES_CONNECTED = Gauge("radical_edge_edges_connected", "Edges whose socket this process holds",
                        multiprocess_mode="livesum")
FRAMES = Counter("radical_edge_frames_total", "WebSocket frames exchanged with agents", ["direction", "type"])
PROTOCOL_ERRORS = Counter("radical_edge_protocol_errors_total", "Malformed frames received from agents")
AUDIT_DROPPED = Counter("radical_edge_audit_dropped_total",
                        "Audit records dropped because the buffer was full (database away or too slow)")
AUDIT_UNSTORABLE = Counter("radical_edge_audit_unstorable_total",
                           "Audit records dropped because the database refused them even alone")
EVENTS_DROPPED = Counter("radical_edge_events_dropped_total",
                         "Agent events not stored: over an edge's rate limit, buffer full, or refused by the database",
                         ["reason"])
EVENTS_HOLE_READS = Counter("radical_edge_events_stream_hole_reads_total",
                            "Database reads by event streams for ids that live delivery had not brought in time "
                            "(published out of order by other processes, or lost)")
GC_FULL = Counter("radical_edge_gc_full_collections_total",
                  "Full garbage collections the bridge ran itself (collector.py), by reason", ["reason"])
GC_UNREACHABLE = Counter("radical_edge_gc_unreachable_objects_total",
                         "Unreachable objects those full collections found, by reason", ["reason"])


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


# Labelled children, looked up once: ``Metric.labels()`` validates and locks on every call.
_children: dict[tuple, Any] = {}


def child(metric, *labels: str):
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


# -- the proxy path's counts, tallied -----------------------------------------------------
# A proxied call moved seven prometheus_client values (frames out and in, in flight up and
# down, requests, latency, bytes), each behind a lock (and, in multiprocess mode, a write to
# an mmap'd file): about 8% of the bridge's time per call (docs/BENCHMARKS.md, "Where the
# time goes"). The hot path adds to plain numbers instead (:func:`tally`, :func:`tally_latency`);
# they are folded into the metrics before every scrape of this process (:func:`fold`) and,
# for the other processes of a multiprocess site, at most FOLD_INTERVAL seconds after they
# were counted. Everything here runs on the event loop's thread (the proxy, the consumers,
# the inbox and the async ``metrics_view``), so no lock is needed.
FOLD_INTERVAL = 1.0
_tallied: dict[Any, float] = {}  # a metric (or labelled child) -> amount not yet added
_latency_counts = [0] * len(LATENCY._upper_bounds)  # observations per bucket, not yet added
_latency_sum = 0.0
_fold_timer: asyncio.TimerHandle | None = None


def tally(metric, amount: float = 1.0) -> None:
    """``metric.inc(amount)``, deferred (a Gauge's dec is a negative amount)."""
    _tallied[metric] = _tallied.get(metric, 0.0) + amount
    if _fold_timer is None:
        _arm_fold()


def tally_latency(seconds: float) -> None:
    """``LATENCY.observe(seconds)``, deferred."""
    global _latency_sum
    _latency_counts[bisect_left(LATENCY._upper_bounds, seconds)] += 1
    _latency_sum += seconds
    if _fold_timer is None:
        _arm_fold()


def _arm_fold() -> None:
    global _fold_timer
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        fold()  # not on an event loop (a management command, a sync test): at once
        return
    _fold_timer = loop.call_later(FOLD_INTERVAL, fold)


def fold() -> None:
    """Add what was tallied to the metrics themselves."""
    global _latency_sum, _fold_timer
    if _fold_timer is not None:
        _fold_timer.cancel()
        _fold_timer = None
    while _tallied:
        metric, amount = _tallied.popitem()
        metric.inc(amount)
    if _latency_sum or any(_latency_counts):
        for i, n in enumerate(_latency_counts):
            if n:
                LATENCY._buckets[i].inc(n)
                _latency_counts[i] = 0
        LATENCY._sum.inc(_latency_sum)
        _latency_sum = 0.0


_requests_children: dict[tuple[str, int], Any] = {}


def call_observed(info) -> None:
    """``proxy.call_observers`` hook: count one finished call."""
    key = (info.method, info.status)
    counter = _requests_children.get(key)
    if counter is None:
        counter = _requests_children[key] = child(REQUESTS, info.method, status_class(info.status))
    tally(counter)
    tally_latency(max(0.0, time.monotonic() - info.started))
    if info.error:
        tally(child(ERRORS, info.error))
    if info.bytes_in:
        tally(child(BYTES, "in"), info.bytes_in)
    if info.bytes_out:
        tally(child(BYTES, "out"), info.bytes_out)


def install() -> None:
    """Count every proxied call (``hooks.call_observers``; called by AppConfig.ready)."""
    if call_observed not in hooks.call_observers:
        hooks.call_observers.append(call_observed)


def _allowed(request: HttpRequest) -> bool:
    expected = os.environ.get("RADICAL_METRICS_TOKEN", "")
    if expected:
        given = bearer_from_header(request.META.get("HTTP_AUTHORIZATION")) or ""
        return hmac.compare_digest(given.encode(), expected.encode())
    return request.META.get("REMOTE_ADDR") in ("127.0.0.1", "::1")


async def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return JsonResponse({"error": "forbidden", "detail": "metrics need RADICAL_METRICS_TOKEN or a loopback client"},
                            status=403)
    fold()  # async: this runs on the event loop's thread, the only one that tallies
    if MULTIPROCESS:
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
