"""Retry delays (edge_agent.backoff): the one formula, and the agent's reconnect policy built on
it (fast during short outages, gentle in long ones, jittered)."""

from __future__ import annotations

import time

from edge_agent.backoff import Backoff, backoff_delay
from edge_agent.service import register_url


def test_backoff_delay_doubles_from_the_base_up_to_the_cap():
    assert [backoff_delay(n, base=0.5, cap=5.0) for n in range(-1, 6)] == [0.5, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_delay(10**6, base=0.1, cap=30.0) == 30.0  # no overflow however long the outage
    assert backoff_delay(2, base=1.0, cap=100.0, factor=3.0) == 9.0


def test_backoff_delay_jitter_stays_in_its_band_and_varies():
    delays = [backoff_delay(3, base=1.0, cap=60.0, jitter=(0.5, 1.0)) for _ in range(200)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100


def test_the_agent_and_its_reconnects_import_the_same_backoff():
    from edge_agent import service

    assert service.Backoff is Backoff


def test_delays_stay_under_the_fast_cap_early_in_an_outage_and_are_jittered():
    b = Backoff()
    delays = [b.next_delay() for _ in range(20)]
    assert all(d <= b.fast_cap for d in delays)
    assert len({round(d, 6) for d in delays}) > 10  # not lock-step


def test_delays_grow_to_the_maximum_in_a_long_outage():
    b = Backoff()
    b.next_delay()
    b.outage_started = time.monotonic() - b.fast_window - 1
    delays = [b.next_delay() for _ in range(20)]
    assert max(delays) > b.fast_cap and all(d <= b.maximum for d in delays)
    assert delays[-1] >= b.maximum / 2


def test_reset_after_a_successful_connection_starts_over():
    b = Backoff()
    b.outage_started = time.monotonic() - 3600
    b.attempt = 50
    b.reset()
    assert b.next_delay() <= b.initial


def test_register_url_accepts_http_and_ws_forms():
    assert register_url("https://bridge.example") == "wss://bridge.example/register"
    assert register_url("http://127.0.0.1:8000/") == "ws://127.0.0.1:8000/register"
    assert register_url("wss://b.example/prefix/register") == "wss://b.example/prefix/register"
    assert register_url("https://b.example/site") == "wss://b.example/site/register"
