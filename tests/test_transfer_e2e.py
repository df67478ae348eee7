"""Large bodies through the bridge: byte-exact, flow-controlled, bounded bridge memory."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import httpx
import psutil
import pytest

pytestmark = pytest.mark.e2e

SIZE = 64 * 1024 * 1024


class PeakRSS:
    """Samples a process's RSS in a thread while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def test_64_mib_up_and_down_byte_exact_with_bounded_bridge_memory(edge_setup):
    s = edge_setup()
    body = os.urandom(SIZE)
    with s.bridge.client(s.token, timeout=120) as c:
        c.get(f"/{s.edge}/echo/ping")  # warm the bridge's caches first
        with PeakRSS(s.bridge.proc.pid) as up:
            r = c.post(f"/{s.edge}/echo/digest", content=body)
        assert r.json() == {"size": SIZE, "sha256": hashlib.sha256(body).hexdigest()}
        digest = hashlib.sha256()
        with PeakRSS(s.bridge.proc.pid) as down, c.stream("GET", f"/{s.edge}/echo/bytes/{SIZE}") as r:
            assert r.headers["content-length"] == str(SIZE)
            for piece in r.iter_bytes(256 * 1024):
                digest.update(piece)
                time.sleep(0.002)  # a slow reader: the agent must wait for credit, not the bridge buffer
        assert digest.hexdigest() == r.headers["x-edge-sha256"]
    # The bridge never holds a whole body: a window of chunks at most, plus allocator slack.
    assert up.growth_mib < 32, up.growth_mib
    assert down.growth_mib < 32, down.growth_mib


def test_agent_killed_mid_upload_and_mid_download_answers_the_caller_promptly(edge_setup):
    s = edge_setup()

    def slow_body():
        for _ in range(64):
            yield b"x" * (1024 * 1024)
            time.sleep(0.05)

    killer = threading.Timer(0.5, s.agent.kill)
    killer.start()
    with s.bridge.client(s.token, timeout=30) as c:
        try:
            r = c.post(f"/{s.edge}/echo/digest", content=slow_body())
        except httpx.HTTPError:
            pass  # the bridge may close the connection after answering early: also prompt
        else:
            assert r.status_code == 502 and r.json()["error"] == "edge_disconnected"
    killer.join()


def test_agent_killed_mid_download_cuts_the_body_short(edge_setup):
    s = edge_setup()
    got = 0
    with s.bridge.client(s.token, timeout=30) as c, pytest.raises(httpx.HTTPError), \
            c.stream("GET", f"/{s.edge}/echo/bytes/{SIZE}") as r:
        for piece in r.iter_bytes(256 * 1024):
            got += len(piece)
            if got >= 8 * 1024 * 1024 and s.agent.proc.poll() is None:
                s.agent.kill()
            time.sleep(0.002)
    assert 0 < got < SIZE  # truncated, never silently complete


def test_bodies_without_a_declared_length_arrive_whole(edge_setup):
    """A chunked upload (no Content-Length) is read to its end, small or large (the proxy
    skips reading only when neither Content-Length nor Transfer-Encoding is sent)."""
    s = edge_setup()
    small, large = os.urandom(1000), os.urandom(3 * 1024 * 1024 + 17)

    def pieces(data: bytes, size: int):
        for i in range(0, len(data), size):
            yield data[i:i + size]

    with s.bridge.client(s.token, timeout=60) as c:
        for data, size in ((small, 100), (large, 64 * 1024)):
            r = c.post(f"/{s.edge}/echo/digest", content=pieces(data, size))
            assert "content-length" not in r.request.headers
            assert r.request.headers["transfer-encoding"] == "chunked"
            assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        r = c.post(f"/{s.edge}/echo/digest")
        assert r.json() == {"size": 0, "sha256": hashlib.sha256(b"").hexdigest()}
