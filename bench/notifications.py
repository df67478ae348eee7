"""Notifications: events from a real agent delivered to webhook receivers on 127.0.0.1.

    python -m bench.notifications                         # all three measurements, small
    python -m bench.notifications --subscribers 100 --events 200 --down-seconds 300

1. Latency: one webhook subscriber, events emitted one at a time; the time from the
   agent's event (its ``ts``) to the receiver's arrival, p50 and p99.
2. Throughput: ``--subscribers`` webhook subscriptions (one user; the per-user and
   per-target rate limits off, as they would cap the figure), ``--events`` events: deliveries
   per second from the first emit to the last delivery, each subscriber checked to get
   every event once and in order.
3. A target down: one subscriber whose receiver answers 500 for ``--down-seconds`` while
   the agent emits ``--down-rate`` events a second: the bridge's memory at start and end
   (the outbox is in the database, not in memory), then every event delivered once after
   the receiver recovers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.proxy import cpu_seconds, rss_mb
from tests.support.live import AgentProcess, LiveBridge, free_port, wait_for

EDGE = "bench-notify"
ENV = {"RADICAL_NOTIFY_WORKER": "1", "RADICAL_NOTIFY_ALLOW_PRIVATE_TARGETS": "1", "RADICAL_NOTIFY_ALLOW_HTTP": "1",
       "RADICAL_NOTIFY_USER_RATE": "0", "RADICAL_NOTIFY_TARGET_RATE": "0", "RADICAL_NOTIFY_RETRY_BASE": "0.5",
       "RADICAL_NOTIFY_RETRY_MAX_DELAY": "5", "RADICAL_LOG_LEVEL": "WARNING", "RADICAL_EVENTS_RATE_PER_EDGE": "0",
       "RADICAL_NOTIFY_MAX_SUBSCRIPTIONS_PER_USER": "1000"}


class Receiver:
    """Records (path, arrival time, body) of every accepted POST; answers 500 while failing."""

    def __init__(self) -> None:
        self.got: list[tuple[str, float, dict]] = []
        self.failing = False
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                now = time.time()
                code = 500 if receiver.failing else 200
                if code == 200:
                    with receiver.lock:
                        receiver.got.append((self.path, now, json.loads(body)))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def count(self) -> int:
        with self.lock:
            return len(self.got)

    def clear(self) -> None:
        with self.lock:
            self.got.clear()


def subscribe(bridge: LiveBridge, token: str, url: str) -> int:
    with bridge.client(token) as c:
        r = c.post("/api/v1/notifications/subscriptions/", json={"target": "webhook", "url": url, "plugin": "echo"})
        r.raise_for_status()
        return r.json()["id"]


def unsubscribe_all(bridge: LiveBridge, token: str) -> None:
    with bridge.client(token) as c:
        for sub in c.get("/api/v1/notifications/subscriptions/").json():
            c.delete(f"/api/v1/notifications/subscriptions/{sub['id']}/")


def emit(bridge: LiveBridge, token: str, n: int) -> None:
    with bridge.client(token) as c:
        c.post(f"/{EDGE}/echo/emit/{n}").raise_for_status()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--latency-events", type=int, default=200)
    parser.add_argument("--down-seconds", type=float, default=60.0)
    parser.add_argument("--down-rate", type=float, default=20.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        bridge = LiveBridge(var / "bridge", env=ENV)
        bridge.migrate()
        bridge.start()
        seeded = bridge.seed(users=["bench"], api_tokens=["bench"], edge_tokens=[(EDGE, "bench")])
        token = seeded["api"]["bench"]
        agent = AgentProcess(bridge.url, seeded["edge"][EDGE], var, plugins="tests.plugins.echo:EchoPlugin").start()
        receiver = Receiver()
        try:
            wait_for(lambda: bridge.edge_online(token, EDGE), 30, what="edge online")

            # 1. latency
            subscribe(bridge, token, receiver.url("latency"))
            for i in range(args.latency_events):
                emit(bridge, token, 1)
                wait_for(lambda i=i: receiver.count() > i, 30, interval=0.001, what="delivery")
                # Sparse events, as jobs ending are: an event right after another waits for
                # the event writer's rest (EVENTS_FLUSH_INTERVAL, 0.2 s), which is not ours.
                time.sleep(0.25)
            lat = [(arrived - body["ts"]) * 1000 for _, arrived, body in receiver.got]
            print(f"latency, agent event → receiver, 1 subscriber, {len(lat)} events: "
                  f"p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms")
            unsubscribe_all(bridge, token)
            receiver.clear()

            # 2. throughput to many subscribers
            for k in range(args.subscribers):
                subscribe(bridge, token, receiver.url(f"s{k}"))
            total = args.subscribers * args.events
            cpu0, t0 = cpu_seconds(bridge.proc.pid), time.perf_counter()
            emit(bridge, token, args.events)
            wait_for(lambda: receiver.count() >= total, 600, interval=0.02, what=f"{total} deliveries")
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(bridge.proc.pid) - cpu0
            per: dict[str, list[int]] = {}
            for path, _, body in receiver.got:
                per.setdefault(path, []).append(body["data"]["i"])
            assert all(v == list(range(args.events)) for v in per.values()) and len(per) == args.subscribers
            print(f"throughput, {args.subscribers} subscribers x {args.events} events = {total} deliveries: "
                  f"{total / elapsed:.0f} deliveries/s ({args.events / elapsed:.1f} events/s to all), "
                  f"bridge CPU {cpu / total * 1e6:.0f} µs per delivery; each once, in order")
            unsubscribe_all(bridge, token)
            receiver.clear()

            # 3. a target down
            subscribe(bridge, token, receiver.url("down"))
            receiver.failing = True
            rss0 = rss_mb(bridge.proc.pid)
            sent, started = 0, time.monotonic()
            peak = rss0
            while time.monotonic() - started < args.down_seconds:
                emit(bridge, token, max(1, int(args.down_rate)))
                sent += max(1, int(args.down_rate))
                peak = max(peak, rss_mb(bridge.proc.pid))
                time.sleep(1.0)
            rss1 = rss_mb(bridge.proc.pid)
            receiver.failing = False
            wait_for(lambda: receiver.count() >= sent, 600, interval=0.05, what="recovery")
            got = [body["data"]["i"] for _, _, body in receiver.got]
            assert len(got) == sent, (len(got), sent)
            print(f"target down {args.down_seconds:.0f} s, {sent} events owed: bridge RSS {rss0:.0f} → {rss1:.0f} MB "
                  f"(peak {peak:.0f}); all {len(got)} delivered once after recovery")
        finally:
            receiver.server.shutdown()
            agent.stop()
            bridge.stop()


if __name__ == "__main__":
    main()
