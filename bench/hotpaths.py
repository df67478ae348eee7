"""What the proxy's per-call hooks cost, in process: the audit observer (buffers a record
of every proxied call) and the rate-limit guard (token buckets per user and per edge).

    python -m bench.hotpaths                # 20,000 calls each, best of 5 rounds
    python -m bench.hotpaths --calls 100000

Both run on every proxied call, on the event loop, so each must stay in the microseconds:
what they guard against is I/O on the request path, which costs milliseconds. (These were
wall-clock assertions in tests/test_audit.py and tests/test_ratelimit.py; timings belong
here, where a slow shared machine makes a number worse instead of a test red.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable


def per_call(fn: Callable[[], object], calls: int, rounds: int) -> float:
    """Seconds per call of ``fn``: the best of ``rounds`` rounds of ``calls`` calls."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - started) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "radical_edge_site.settings")
    import django

    django.setup()
    from django.test import override_settings

    from bridge_app.calls import throttling
    from bridge_app.calls.proxy import CallInfo, ProxyTarget
    from bridge_app.core.directory import Principal
    from bridge_app.observability import audit

    principal = Principal(user_id=7, username="uma", token_id=3)
    target = ProxyTarget("hpc1", "jobs", "st")
    info = CallInfo("req-1", principal, target, "GET")
    info.status, info.bytes_in, info.bytes_out = 200, 10, 2000

    def observe() -> None:
        audit.call_observed(info)
        if len(audit.buffer.rows) >= 10_000:
            audit.buffer.take()  # not written: this measures the request path only

    with override_settings(RADICAL_EDGE={"USER_RATE": 1e9, "USER_BURST": 1e9, "EDGE_RATE": 1e9,
                                         "EDGE_BURST": 1e9}):
        limits = throttling.RateLimits()
    limits.redis_url = ""
    edge = type("Edge", (), {"id": 1, "name": "hpc1"})()

    async def check_limits() -> float:  # the guard runs on the event loop
        return per_call(lambda: limits(principal, edge, target, "user"), args.calls, args.rounds)

    rows = [("audit observer (audit.call_observed)", per_call(observe, args.calls, args.rounds)),
            ("rate-limit guard (throttling.RateLimits)", asyncio.run(check_limits()))]
    audit.buffer.take()
    print(f"| hook | µs per call (best of {args.rounds} x {args.calls:,}) |")
    print("|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e6:.2f} |")


if __name__ == "__main__":
    main()
