"""`make run`'s command: set up everything and run the bridge plus a local demo edge."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from edge_agent.client import BridgeClient
from tests.support.live import ROOT, base_env, free_port, wait_for

pytestmark = pytest.mark.e2e


def start_demo(tmp_path, port: int, log) -> subprocess.Popen:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "manage.py", "rundemo", "--port", str(port)], cwd=ROOT,
                                env=base_env(tmp_path / "var"), stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: "Radical Edge is running" in log.read_text(), 90, interval=0.2, what="demo banner")
    return proc


def test_rundemo_sets_up_runs_and_prints_how_to_use_it(tmp_path):
    port = free_port()
    log = tmp_path / "rundemo.log"
    proc = start_demo(tmp_path, port, log)
    try:
        text = log.read_text()
        token = re.search(r"API token\s+(rda_\S+)", text).group(1)
        password = re.search(r"Log in as\s+admin / (\S+)", text).group(1)
        assert f"http://127.0.0.1:{port}/admin/" in text and "curl" in text
        # The curl line of the README works...
        edges = httpx.post(f"http://127.0.0.1:{port}/edge/list", headers={"Authorization": f"Bearer {token}"}).json()
        plugins = edges["data"]["edges"]["local"]["plugins"]
        assert {"sysinfo", "psij", "queue_info", "rhapsody"} <= set(plugins)
        # ...and so does the SDK line.
        metrics = BridgeClient(f"http://127.0.0.1:{port}", token=token).get_edge_client("local") \
            .get_plugin("sysinfo").get_metrics()
        assert metrics["memory"]["total"] > 0
        # The printed credentials log in to the admin.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as web:
            web.get("/accounts/login/")
            r = web.post("/accounts/login/", data={"username": "admin", "password": password,
                                                    "csrfmiddlewaretoken": web.cookies["csrftoken"]},
                         headers={"Referer": f"http://127.0.0.1:{port}/accounts/login/"})
            assert r.status_code in (200, 302) and "sessionid" in web.cookies
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2  # the bridge and the agent
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    # Ctrl-C / SIGTERM stops both children too.
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
    # A second start reuses what exists (idempotent set-up) and prints the same token.
    log2 = tmp_path / "again.log"
    again = start_demo(tmp_path, port, log2)
    try:
        assert f"API token     {token}" in log2.read_text()
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(60)
        time.sleep(0.2)
