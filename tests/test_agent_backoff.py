"""The agent's reconnect policy: fast during short outages, gentle in long ones, jittered."""

from __future__ import annotations

import time

from edge_agent.service import Backoff, register_url


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
