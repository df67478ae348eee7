"""The production layout of docs/OPERATIONS.md, run for real: Debian's nginx with
``deploy/nginx/radical-edge.conf`` (ports, paths and server name substituted) terminating TLS
with a throwaway CA, in front of two bridge processes on PostgreSQL and Redis, with agents,
callers and event streams going through it.

nginx runs in the foreground as a child of the test with its own prefix directory and is
stopped by the fixture (``radical_edge_site/nginx.py``). The module's tests share one layout
(starting it costs two bridges, nginx and an agent); a test that restarts bridge processes
starts them again, and each test begins with every process up and the edge reachable.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import select
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import trustme

from edge_agent.client import BridgeClient
from radical_edge_site.nginx import SITE_CONF, Nginx, nginx_binary
from tests.support.live import AgentProcess, LiveBridge, free_port, start_all, wait_for
from tests.test_events_e2e import PASSWORD, SSEClient
from tests.test_scaleout_e2e import holder

# The first test also starts the shared layout (two bridges, nginx, an agent); the rolling
# restart restarts each bridge process twice under load.
pytestmark = [pytest.mark.e2e, pytest.mark.nginx, pytest.mark.timeout(600)]

SIZE = 64 * 1024 * 1024
# The documented retry (docs/OPERATIONS.md, "Restarts and upgrades"): a call answered
# 503 edge_offline was not delivered, and is retried after a short pause.
RETRY_DELAY = 0.5
RETRIES = 10


class Layout:
    """nginx + two bridge processes + one agent connected through nginx."""

    def __init__(self, nginx: Nginx, bridges: list, ca_file: Path, edge: str, token: str, agent) -> None:
        self.nginx, self.bridges, self.ca_file, self.edge, self.token, self.agent = (
            nginx, bridges, ca_file, edge, token, agent)
        self.url = nginx.url
        self.trust = ssl.create_default_context(cafile=str(ca_file))

    def client(self, **kwargs) -> httpx.Client:
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, verify=self.trust, headers={"Authorization": f"Bearer {self.token}"},
                            **kwargs)

    def emit(self, count: int) -> None:
        with self.client() as c:
            assert c.post(f"/{self.edge}/echo/emit/{count}").json() == {"emitted": count}

    def edge_reachable(self) -> bool:
        with self.client(timeout=10) as c:
            return c.get(f"/{self.edge}/echo/ping").status_code == 200

    def restore(self) -> None:
        """Every bridge process running (a test that failed mid-restart may have left one
        stopped) and the edge reachable through nginx."""
        for bridge in self.bridges:
            if bridge.proc is None or bridge.proc.poll() is not None:
                bridge.start()
        wait_for(self.edge_reachable, 30, interval=0.2, what="edge reachable through nginx")


def make_tls_files(directory: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": directory / "ca.pem", "cert": directory / "fullchain.pem", "key": directory / "privkey.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(files["cert"]), append=i > 0)
    return files


@pytest.fixture(scope="module")
def shared_layout(tmp_path_factory, scaled_backends, request):
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    tmp_path = tmp_path_factory.mktemp("nginx-layout")
    tls_files = make_tls_files(tmp_path)
    edge = f"nginx-{uuid.uuid4().hex[:8]}"
    https_port, http_port = free_port(), free_port()
    env = {"DJANGO_SECURE": "1", "RADICAL_BEHIND_TLS_PROXY": "1", "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
           "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{https_port}",
           # The restart test calls as fast as it can: that is not what the rate limits are for.
           "RADICAL_USER_RATE": "0", "RADICAL_EDGE_RATE": "0",
           # The log-in test is about nginx's limit, not the bridge's own lockout behind it.
           "RADICAL_LOGIN_FAILURE_LIMIT": "100"}
    # The scaled database is the session's: a user and an edge of this module's own there.
    bridges = [LiveBridge(tmp_path / f"bridge-{i}", env={**scaled_backends.env(), **env}) for i in range(2)]
    agent = nginx = None
    failed_before = request.session.testsfailed
    try:
        start_all(bridges)
        nginx = Nginx(tmp_path / "nginx", https_port=https_port, http_port=http_port,
                      upstreams=[b.port for b in bridges], cert=tls_files["cert"], key=tls_files["key"]).start()
        seeded = bridges[0].seed(users=["ann"], api_tokens=["ann"], edge_tokens=[(edge, "ann")])
        agent = AgentProcess(nginx.url, seeded["edge"][edge], tmp_path, plugins="tests.plugins.echo:EchoPlugin",
                             extra_args=["--ca-cert", str(tls_files["ca"])]).start()
        site = Layout(nginx, bridges, tls_files["ca"], edge, seeded["api"]["ann"], agent)
        wait_for(site.edge_reachable, 30, interval=0.2, what="edge reachable through nginx")
        yield site
    finally:
        failed = request.session.testsfailed > failed_before
        for proc in [agent, nginx, *bridges]:
            if proc is not None:
                if failed:
                    print(f"--- {type(proc).__name__} log ---\n{proc.log()[-6000:]}")
                proc.stop()


@pytest.fixture
def layout(shared_layout):
    shared_layout.restore()
    return shared_layout


def test_agents_and_calls_go_through_nginx_over_verified_tls(layout):
    with layout.client() as c:
        assert c.get(f"/{layout.edge}/echo/ping").json() == {"pong": True}
        assert c.post(f"/{layout.edge}/echo/echo", content=b"through nginx").content == b"through nginx"
        assert c.get(f"/{layout.edge}/echo/whoami").json()["caller"]["user"] == "ann"
        assert c.get("/api/v1/edges/").status_code == 200  # Django, behind DJANGO_SECURE=1: https as it should
        assert c.post("/edge/list").json()["data"]["bridge"]["url"] == layout.url  # scheme, host and port
    # The agent's socket came through nginx with the certificate verified (no --insecure).
    assert holder(layout.bridges, layout.edge) is not None
    assert "TLS VERIFICATION IS DISABLED" not in layout.agent.log()
    # nginx's certificate is not trusted without the site CA...
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{layout.url}/healthz", timeout=5)
    # ...and plain HTTP is sent to HTTPS.
    r = httpx.get(f"http://127.0.0.1:{layout.nginx.http_port}/healthz", timeout=5)
    assert r.status_code == 301 and r.headers["location"] == f"{layout.url}/healthz"


def test_forwarding_headers_are_believed_only_from_nginx(layout):
    spoof = {"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https"}
    # A client at another address claims to be loopback: nginx replaces the claim with the
    # address it saw, so the bridge's loopback-only /metrics refuses it.
    elsewhere = httpx.HTTPTransport(local_address="127.0.0.2", verify=layout.trust)
    with httpx.Client(base_url=layout.url, transport=elsewhere, timeout=10) as c:
        assert c.get("/metrics", headers=spoof).status_code == 403
        assert c.get("/accounts/login/").status_code == 200  # https according to nginx: no redirect
    # Straight to a bridge process from an address that is not nginx's: both headers ignored.
    bridge = layout.bridges[0]
    with httpx.Client(base_url=bridge.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                      timeout=10) as c:
        assert c.get("/metrics", headers=spoof).status_code == 403
        r = c.get("/accounts/login/", headers=spoof)
        assert r.status_code == 301 and r.headers["location"].startswith("https://")
    # Prometheus on the host scrapes each process over plain HTTP, as documented.
    assert httpx.get(f"{bridge.url}/metrics", timeout=10).status_code == 200


def _login_form(c: httpx.Client) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', c.get("/accounts/login/").text).group(1)


def test_password_logins_are_rate_limited_by_nginx(layout):
    referer = {"Referer": f"{layout.url}/accounts/login/"}
    with httpx.Client(base_url=layout.url, verify=layout.trust, timeout=30) as c:
        assert [c.get("/accounts/login/").status_code for _ in range(8)] == [200] * 8  # the form is not limited
        r = c.post("/accounts/login/", data={"username": "ann", "password": PASSWORD,
                                             "csrfmiddlewaretoken": _login_form(c)}, headers=referer)
        assert r.status_code == 302, r.text[:300]  # a real log-in works through nginx (CSRF over https)
    with httpx.Client(base_url=layout.url, verify=layout.trust, timeout=60) as c:
        csrf = _login_form(c)

        def guess(_: int) -> httpx.Response:
            return c.post("/accounts/login/", data={"username": "ann", "password": "wrong",
                                                    "csrfmiddlewaretoken": csrf}, headers=referer)

        # All at once, as a password-guessing client would send them: what nginx lets through
        # then does not depend on how long the bridge takes to refuse each one (the limit
        # refills one every 6 s, so one after another on a slow machine would earn more).
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(guess, range(12)))
    statuses = sorted(r.status_code for r in answers)
    # 10 a minute with a burst of 5: the first log-in above took one, the burst five more;
    # the rest is turned away by nginx itself (its own error page), never reaching the bridge.
    by_nginx = [r for r in answers if r.status_code == 429 and "nginx" in r.text]
    assert statuses.count(200) >= 5, statuses
    assert len(by_nginx) >= 5 and len(by_nginx) + statuses.count(200) == 12, statuses


def test_event_stream_resumes_with_last_event_id_on_a_restarted_process(layout):
    first_bridge, second_bridge = layout.bridges
    first = SSEClient(layout.url, token=layout.token, params={"edge": layout.edge}, verify=layout.trust)
    layout.emit(3)
    wait_for(lambda: len(first.notifications()) == 3, 20, what="three events through nginx")
    seen_up_to = first.notifications()[-1][0]
    first.close()

    first_bridge.stop()  # SIGTERM: whatever it held moves to the other process
    wait_for(layout.edge_reachable, 30, interval=0.2, what="edge reachable during the restart")
    layout.emit(3)  # while nobody listens
    first_bridge.start()
    second_bridge.stop()  # so that the stream resumes on the restarted process
    wait_for(layout.edge_reachable, 30, interval=0.2, what="edge on the restarted process")

    second = SSEClient(layout.url, token=layout.token, params={"edge": layout.edge}, verify=layout.trust,
                       headers={"Last-Event-ID": str(seen_up_to)})
    layout.emit(1)
    wait_for(lambda: len(second.notifications()) == 4, 20, what="replay, then live, through nginx")
    assert [d["data"]["i"] for _, d in second.notifications()] == [0, 1, 2, 0]
    ids = [i for i, _ in second.notifications()]
    assert ids == sorted(ids) and ids[0] > seen_up_to and len(set(ids)) == 4
    second.close()
    second_bridge.start()


def test_64_mib_up_and_down_byte_identical_streamed_through_nginx(layout):
    body = os.urandom(SIZE)
    with layout.client(timeout=180) as c:
        r = c.post(f"/{layout.edge}/echo/echo", content=body)  # up and back down, one call
        assert r.status_code == 200 and len(r.content) == SIZE and r.content == body
        r = c.post(f"/{layout.edge}/echo/digest", content=body)
        assert r.json() == {"size": SIZE, "sha256": hashlib.sha256(body).hexdigest()}
        digest, got = hashlib.sha256(), 0
        with c.stream("GET", f"/{layout.edge}/echo/bytes/{SIZE}") as r:
            for piece in r.iter_bytes(256 * 1024):
                digest.update(piece)
                got += len(piece)
        assert got == SIZE and digest.hexdigest() == r.headers["x-edge-sha256"]
    # Neither direction was spooled to disk by nginx.
    assert "buffered to a temporary file" not in layout.nginx.log()
    # One byte over RADICAL_MAX_BODY_BYTES: nginx refuses on the Content-Length alone.
    with socket.create_connection(("127.0.0.1", layout.nginx.https_port), timeout=10) as raw, \
            layout.trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall((f"POST /{layout.edge}/echo/digest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {layout.token}\r\nContent-Length: {SIZE + 1}\r\n\r\n").encode())
        assert tls.recv(4096).startswith(b"HTTP/1.1 413")


def _call_with_retry(c: httpx.Client, method: str, path: str, log: list, **kwargs) -> httpx.Response:
    """One call, retried as docs/OPERATIONS.md says; every answer is logged as (path, status)."""
    for _ in range(RETRIES + 1):
        r = c.request(method, path, **kwargs)
        log.append((path, r.status_code, r.headers.get("content-type", "").startswith("application/json")
                    and r.json().get("error")))
        if r.status_code == 503 and log[-1][2] == "edge_offline":
            time.sleep(RETRY_DELAY)
            continue
        return r
    return r


def test_rolling_restart_behind_nginx_fails_no_call_and_loses_no_event(layout):
    got: list[dict] = []
    bc = BridgeClient(layout.url, token=layout.token, ca_cert=str(layout.ca_file))
    sub = bc.register_callback(layout.edge, "echo", "tick", got.append, backoff_max=2)
    assert sub.wait_connected(20)
    stop = threading.Event()
    answers: list[tuple] = []  # (path, status, error) of every attempt
    emitted = [0]

    def quick_calls() -> None:
        with layout.client(timeout=60) as c:
            for i in range(20_000):  # bounded; ends when the restarts are done
                if stop.is_set():
                    return
                if i % 5 == 0:
                    r = _call_with_retry(c, "POST", f"/{layout.edge}/echo/emit/1", answers)
                    emitted[0] += r.status_code == 200
                else:
                    _call_with_retry(c, "GET", f"/{layout.edge}/echo/ping", answers)

    def slow_calls() -> None:
        with layout.client(timeout=60) as c:
            for _ in range(1_000):
                if stop.is_set():
                    return
                _call_with_retry(c, "GET", f"/{layout.edge}/echo/sleep/1", answers)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(quick_calls), pool.submit(quick_calls), pool.submit(slow_calls),
                   pool.submit(slow_calls)]
        try:
            wait_for(lambda: len(answers) > 50, 30, what="calls flowing")
            for bridge in layout.bridges * 2:  # one at a time, as systemd would; twice round
                bridge.proc.send_signal(15)
                assert bridge.proc.wait(60) in (0, -15)
                bridge.start()
                wait_for(lambda: len(answers) > 50, 30, what="calls flowing")
                wait_for(layout.edge_reachable, 30, interval=0.2, what="edge reachable after a restart")
        finally:
            stop.set()
            for w in workers:
                w.result(timeout=120)
    finals = [a for a in answers if a[1] != 200 and a[2] != "edge_offline"]
    retried = [a for a in answers if a[2] == "edge_offline"]
    try:
        assert finals == [], finals[:10]
        assert emitted[0] > 0
        try:
            wait_for(lambda: len(got) >= emitted[0], 30, what="every event at the SDK subscriber")
        except TimeoutError:
            _explain_missing_events(layout, got)
            raise
        assert len(got) == emitted[0] and len({e["id"] for e in got}) == len(got)
    finally:
        print(f"rolling restart: {len(answers)} answers, {len(retried)} retried (edge_offline), "
              f"{len(finals)} failed; events emitted {emitted[0]}, received {len(got)}")
        bc.close()


def _explain_missing_events(layout: Layout, got: list[dict]) -> None:
    """Print which stored events the subscriber missed, and what it received around them."""
    stored = SSEClient(layout.url, token=layout.token, params={"edge": layout.edge, "last_event_id": 0},
                       verify=layout.trust)
    try:
        wait_for(lambda: len(stored.notifications()) >= len(got), 10, what="the stored events")
    except TimeoutError:
        pass
    stored_ids = [i for i, _ in stored.notifications()]
    stored.close()
    seen = [e["id"] for e in got]
    missing = sorted(set(stored_ids) - set(seen))
    print(f"stored {len(stored_ids)}, received {len(seen)}, missing ids {missing[:20]}")
    for i in missing[:5]:
        pos = next((n for n, x in enumerate(seen) if x > i), len(seen))
        print(f"  around {i}: received {seen[max(pos - 3, 0):pos + 3]}")


def test_a_slowloris_client_is_cut_off_by_nginx(layout):
    header_timeout = int(re.search(r"client_header_timeout\s+(\d+)s;", SITE_CONF.read_text()).group(1))
    with socket.create_connection(("127.0.0.1", layout.nginx.https_port), timeout=10) as raw, \
            layout.trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        cut_off, lines = False, 0
        for lines in range(1, 3 * header_timeout + 1):  # a header line a second, never the last
            try:
                tls.sendall(f"X-Slow-{lines}: x\r\n".encode())
                readable, _, _ = select.select([tls], [], [], 1.0)
                if readable:
                    tls.settimeout(0)  # readable may be a TLS session ticket only: do not wait for data
                    try:
                        cut_off = tls.recv(4096) == b""
                    except ssl.SSLWantReadError:
                        pass
                    tls.settimeout(10)
            except (OSError, ssl.SSLError):
                cut_off = True
            if cut_off:
                break
    print(f"slowloris: cut off after {lines} header lines, one a second")
    assert cut_off, "nginx kept a never-ending request header open"
    wait_for(lambda: "client timed out" in layout.nginx.log(), 5, what="nginx logging the timeout")
    with layout.client() as c:  # and serves everyone else meanwhile
        assert c.get("/healthz").status_code == 200
