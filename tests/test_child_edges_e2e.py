"""Child edges (edges on compute nodes), end to end: a real bridge, a real parent agent
with the psij and edges plugins, and a real child agent that the parent starts as a psij
job (the ``local`` executor here; ``tests/test_child_edges_slurm.py`` does it in Slurm).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.client import BridgeClient
from edge_agent.client.errors import BridgeError, Forbidden, NotFound
from tests.support.live import AgentProcess, LiveBridge, wait_for

PLUGINS = "sysinfo,psij,queue_info,edges"
OPTIONS = ["psij.poll_interval=1"]
SLURM_WAIT = 240.0  # seconds; a shared 2-CPU Slurm can keep a job pending for a while


@pytest.fixture(scope="module")
def family(tmp_path_factory, sqlite_template):
    """One bridge and one parent edge (psij + edges plugins) for the module's tests; each
    test starts children of its own. Users: the owner, a viewer of the parent, mallory."""
    var = tmp_path_factory.mktemp("children")
    bridge = LiveBridge(var / "bridge")
    bridge.migrate(template=sqlite_template)
    bridge.start()
    seeded = bridge.seed(users=["owner", "viewer", "mallory"], api_tokens=["owner", "viewer", "mallory"],
                         edge_tokens=[("hpc-login", "owner")])
    agent = AgentProcess(bridge.url, seeded["edge"]["hpc-login"], var, plugins=PLUGINS, options=OPTIONS).start()
    owner = BridgeClient(bridge.url, token=seeded["api"]["owner"])
    try:
        wait_for(lambda: bridge.edge_online(seeded["api"]["owner"], "hpc-login"), 30, what="parent online")
        owner._http.post("/api/v1/edges/hpc-login/grants", json={"user": "viewer", "role": "viewer"}).raise_for_status()
        yield SimpleNamespace(bridge=bridge, agent=agent, edge="hpc-login", owner="owner", bc=owner,
                              viewer=BridgeClient(bridge.url, token=seeded["api"]["viewer"]),
                              mallory=BridgeClient(bridge.url, token=seeded["api"]["mallory"]),
                              token=seeded["api"]["owner"])
    finally:
        # Children a failed test left running would outlive the bridge until their walltime.
        for edge in ("hpc-login", "isolated-login"):
            try:
                for child in owner.get_edge_client(edge).children():
                    if not child.ended:
                        child.stop()
            except Exception as exc:  # the bridge may be what failed
                print(f"could not stop the children of {edge}: {exc}")
        agent.stop()
        bridge.stop()


@pytest.fixture
def parent(family, request):
    yield family
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"--- parent agent log ---\n{family.agent.log()[-6000:]}\n--- bridge log ---\n"
              f"{family.bridge.log()[-6000:]}")


def child_token_file(setup, child: str) -> Path:
    return setup.agent.state_dir / "edges" / child / "token"


def test_child_edge_launches_registers_serves_and_stops(parent):
    bc = parent.bc
    child = bc.get_edge_client(parent.edge).launch_edge(executor="local", duration=300, name="c1",
                                                        plugins=["sysinfo"])
    assert child.name == f"{parent.edge}.c1" and child.parent == parent.edge
    assert child.job["executor"] == "local" and child.job["state"] in ("QUEUED", "ACTIVE")
    child.wait_online(timeout=30, interval=0.2)

    # It is an edge like any other, owned by the parent's owner, running the child agent.
    info = bc.get_edge_client(child.name).info()
    assert info["owner"] == parent.owner and info["parent"] == parent.edge
    assert [p["name"] for p in info["plugins"]] == ["sysinfo"]
    metrics = bc.get_edge_client(child.name).get_plugin("sysinfo").get_metrics()
    assert metrics["system"]["hostname"]
    assert child.name in [c.name for c in bc.get_edge_client(parent.edge).children()]

    # The token reached the child in a file only this account may read, in a private directory.
    token_file = child_token_file(parent, child.name)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    token = token_file.read_text()
    assert token.startswith("rde_")
    # ... and never on the job's command line.
    job = bc.get_edge_client(parent.edge).get_plugin("psij").get_job_status(child.job["job_id"])
    assert token not in str(job)

    child.stop()
    assert child.ended and child.job["state"] == "CANCELED"
    wait_for(lambda: not bc.get_edge_client(child.name).info()["online"], 20, what="child offline")
    # The token is refused from now on, and calls say why the edge is gone.
    assert not parent.bridge.edge_online(parent.token, child.name)
    with pytest.raises(BridgeError) as err:
        bc.get_edge_client(child.name).get_plugin("sysinfo").get_metrics()
    assert err.value.status == 410 and err.value.error == "edge_ended"
    assert not token_file.exists()


def test_child_says_bye_before_its_walltime(parent):
    bc = parent.bc
    child = bc.get_edge_client(parent.edge).launch_edge(executor="local", duration=12, bye_margin=8, name="short",
                                                        plugins=["sysinfo"])
    child.wait_online(timeout=30, interval=0.2)
    # 4 s after it started it says bye (12 s walltime, 8 s margin): ended, not merely offline.
    wait_for(lambda: child.refresh().ended, 30, interval=0.2, what="child ended")
    # The bridge records the end before it closes the connection (bridge_app/agents/consumers.py,
    # BYE), so a loaded machine can show it ended and still connected for a moment.
    wait_for(lambda: not child.refresh().online, 10, interval=0.2, what="ended child offline")
    with pytest.raises(BridgeError) as err:
        bc.get_edge_client(child.name).get_plugin("sysinfo").get_metrics()
    assert err.value.status == 410 and "ended with its allocation" in err.value.detail
    # Its job ends on its own, well before the walltime (the agent exited after its bye).
    psij = bc.get_edge_client(parent.edge).get_plugin("psij")
    wait_for(lambda: psij.get_job_status(child.job["job_id"])["state"] == "COMPLETED", 20, what="job completed")


def test_others_cannot_launch_see_or_use_children(parent):
    owner, viewer, mallory = parent.bc, parent.viewer, parent.mallory
    with pytest.raises(NotFound):
        mallory.get_edge_client(parent.edge).launch_edge(executor="local", duration=60)
    with pytest.raises(Forbidden):
        viewer.get_edge_client(parent.edge).launch_edge(executor="local", duration=60)
    child = owner.get_edge_client(parent.edge).launch_edge(executor="local", duration=300, plugins=["sysinfo"])
    child.wait_online(timeout=30, interval=0.2)
    # Shared like its parent: the viewer sees it, mallory does not even learn it exists.
    assert viewer.get_edge_client(child.name).info()["name"] == child.name
    with pytest.raises(NotFound):
        mallory.get_edge_client(child.name).info()
    with pytest.raises(NotFound):
        mallory.get_edge_client(child.name).get_plugin("sysinfo").get_metrics()
    with pytest.raises((Forbidden, NotFound)):
        viewer.request("POST", f"/api/v1/edges/{child.name}/stop")
    # The parent's launch route itself is for its owner: a viewer cannot call it directly.
    with pytest.raises(Forbidden):
        viewer.get_edge_client(parent.edge).request("POST", "edges", "launch", json={})
    # Another Unix account cannot read the token file, even where every directory above the
    # plugin's own ones may be entered by anyone.
    token_file = child_token_file(parent, child.name)
    if os.getuid() == 0 and shutil.which("runuser"):
        edges_dir = token_file.parent.parent
        for directory in [*edges_dir.parents][:-1]:
            directory.chmod(directory.stat().st_mode | stat.S_IXOTH)
        copy = edges_dir.parent / "readable"
        copy.write_text("x")
        copy.chmod(0o644)
        assert _read_as_nobody(copy)  # the check can tell: a world-readable file there is read
        assert not _read_as_nobody(token_file)
    child.stop()


def _read_as_nobody(path: Path) -> bool:
    return subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)], capture_output=True).returncode == 0


def test_bad_launch_requests_get_json_errors(parent):
    client = parent.bc
    for body, field in (({}, "duration"), ({"duration": 5}, "duration"), ({"duration": 60, "nodes": 0}, "nodes"),
                        ({"duration": 60, "name": "Bad Name"}, "name"),
                        ({"duration": 60, "bye_margin": 60}, "bye_margin"),
                        ({"duration": 60, "connectivity": "carrier-pigeon"}, "connectivity")):
        response = client._http.post(f"/api/v1/edges/{parent.edge}/children", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid" and field in response.json()["detail"]
    # An executor the parent does not have: the parent's own error, and no child left behind.
    response = client._http.post(f"/api/v1/edges/{parent.edge}/children",
                                 json={"duration": 60, "executor": "nosuch", "name": "x"})
    assert response.status_code == 400 and response.json()["error"] in ("executor_unavailable", "unknown_executor")
    assert f"{parent.edge}.x" not in [c.name for c in client.get_edge_client(parent.edge).children()]
    # Stopping an edge that is not a child.
    response = client._http.post(f"/api/v1/edges/{parent.edge}/stop")
    assert response.status_code == 400 and "not a child edge" in response.json()["detail"]


# -- in the portal ---------------------------------------------------------------------------

@pytest.mark.browser
def test_portal_starts_shows_nested_and_stops_a_child(parent, browser, tmp_path):
    from playwright.sync_api import expect

    from tests.test_portal_browser import login

    context = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=parent.bridge.url)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        login(page, "owner")
        page.goto(f"/edges/{parent.edge}/")
        page.locator("#child-launch").evaluate("details => { details.open = true; }")
        form = page.locator("#child-launch form")
        from tests.fixtures.psij.harness import slurm_running

        if slurm_running()[0]:
            # Queues come from queue_info, with their walltime limits.
            expect(page.locator("#child-queues option[value=debug]")).to_have_count(1)
            form.get_by_label("Queue (partition)").fill("debug")
            form.get_by_label("Queue (partition)").dispatch_event("change")
            expect(page.locator("#child-queue-limit")).to_contain_text("walltime up to 30 min")
            expect(form.get_by_label("Walltime (minutes)")).to_have_attribute("max", "30")
            form.get_by_label("Queue (partition)").fill("")
        form.get_by_label("Scheduler").select_option("local")
        form.get_by_label("Walltime (minutes)").fill("30")
        form.get_by_label("Plugins").fill("sysinfo,psij")
        form.get_by_label("Name suffix").fill("web")
        form.get_by_role("button", name="Start").click()
        # The child's own page, nested under its parent, with its own tabs.
        expect(page.get_by_role("heading", name=f"{parent.edge}.web")).to_be_visible()
        expect(page.locator(".breadcrumbs")).to_contain_text(parent.edge)
        expect(page.locator("#child-job")).to_contain_text("local job")
        wait_for(lambda: parent.bc.get_edge_client(f"{parent.edge}.web").info()["online"], 30, what="child online")
        page.reload()
        expect(page.get_by_role("link", name="PSI/J jobs").or_(page.get_by_role("link", name="psij")).first) \
            .to_be_visible()
        expect(page.locator("#child-job")).to_contain_text(re.compile(r"\d+ min \d+ s of walltime left"))
        # The dashboard nests it under its parent; the parent's page lists it.
        page.goto("/")
        expect(page.locator(f'tr[data-edge="{parent.edge}.web"] .child-edge')).to_contain_text("left")
        page.goto(f"/edges/{parent.edge}/")
        row = page.locator(f'#child-edges tr[data-edge="{parent.edge}.web"]')
        expect(row).to_contain_text("online")
        page.locator("#child-launch").evaluate("details => { details.open = true; }")
        # docs/screenshots/child_edges.png with RADICAL_SCREENSHOT_DIR=docs/screenshots
        shots = Path(os.environ.get("RADICAL_SCREENSHOT_DIR") or tmp_path)
        page.screenshot(path=str(shots / "child_edges.png"), full_page=True)
        row.get_by_role("button", name="Stop").click()
        page.get_by_role("dialog").get_by_role("button", name="Stop").click()
        expect(page.locator(f'#child-edges tr[data-edge="{parent.edge}.web"]')).to_contain_text("ended")
    finally:
        context.close()
    assert not errors


# -- in a real Slurm -------------------------------------------------------------------------


@pytest.fixture
def slurm():
    from tests.fixtures.psij.harness import slurm_running

    ok, reason = slurm_running()
    if not ok:
        pytest.skip(reason)


@pytest.mark.slurm
def test_child_edge_in_a_slurm_job_runs_jobs_and_tasks_and_ends_with_it(parent, slurm):
    bc = parent.bc
    child = bc.get_edge_client(parent.edge).launch_edge(executor="slurm", queue="debug", duration=300, nodes=1,
                                                        plugins=["sysinfo", "psij", "rhapsody"])
    native = child.job["native_id"]
    assert native and native.isdigit() and child.job["state"] == "QUEUED"
    try:
        child.wait_online(timeout=SLURM_WAIT, interval=0.5)
        # It runs inside the job: Slurm's job id is in its sysinfo and host facts.
        ec = bc.get_edge_client(child.name)
        batch = ec.get_plugin("sysinfo").get_metrics()["system"]["batch_job"]
        assert batch == {"scheduler": "slurm", "job_id": native, "nodes": batch["nodes"]} and batch["nodes"]
        # The job's state is psij's, polled by the parent: it may follow the child's hello.
        wait_for(lambda: child.refresh().job["state"] == "ACTIVE", 30, interval=0.5, what="the child's job ACTIVE")
        assert child.job.get("ends_at")
        # A psij job on the child runs inside the child's allocation (the local executor).
        psij = ec.get_plugin("psij")
        job = psij.submit_job({"executable": "/bin/sh", "arguments": ["-c", "echo in $SLURM_JOB_ID"]},
                              executor="local")
        wait_for(lambda: psij.get_job_status(job["job_id"])["state"] == "COMPLETED", 60, what="child's job done")
        assert psij.get_job_status(job["job_id"])["stdout"].strip() == f"in {native}"
        # Rhapsody tasks run on it too.
        rh = ec.get_plugin("rhapsody")
        results = rh.run_tasks([{"executable": "/bin/sh", "arguments": ["-c", "echo task $SLURM_JOB_ID"]}],
                               timeout=60)
        assert [r["stdout"].strip() for r in results] == [f"task {native}"]
    finally:
        child.stop()
    # Cancelled: Slurm drops the job, the child goes offline and its token is refused.
    wait_for(lambda: _squeue_state(native) in ("", "CANCELLED"), 60, what="slurm job gone")
    wait_for(lambda: not child.refresh().online, 20, what="child offline")
    assert child.ended


@pytest.mark.slurm
def test_killed_child_job_shows_as_ended_within_seconds(parent, slurm):
    bc = parent.bc
    child = bc.get_edge_client(parent.edge).launch_edge(executor="slurm", queue="debug", duration=300,
                                                        plugins=["sysinfo"])
    native = child.job["native_id"]
    try:
        child.wait_online(timeout=SLURM_WAIT, interval=0.5)
        # Killed behind the bridge's back (scancel on the login node, a node failure, …):
        # the parent's psij sees the job end and the bridge ends the child.
        subprocess.run(["scancel", native], check=True)
        wait_for(lambda: child.refresh().ended, 30, interval=0.3, what="child ended")
        assert child.job["state"] in ("CANCELED", "FAILED", "COMPLETED") and not child.online
        with pytest.raises(BridgeError) as err:
            bc.get_edge_client(child.name).get_plugin("sysinfo").get_metrics()
        assert err.value.status == 410
    finally:
        subprocess.run(["scancel", native], capture_output=True)


def _squeue_state(native: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", native, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


# -- through the parent's relay --------------------------------------------------------------


def test_child_forced_through_the_relay_works_the_same(parent):
    bc = parent.bc
    child = bc.get_edge_client(parent.edge).launch_edge(executor="local", duration=300, name="relayed",
                                                        connectivity="relay", plugins=["sysinfo", "psij"])
    child.wait_online(timeout=30, interval=0.2)
    edges = bc.get_edge_client(parent.edge).get_plugin("edges")
    relay = edges.call("GET", "relay")
    assert relay["listening"] and relay["active"] == 1
    ec = bc.get_edge_client(child.name)
    assert ec.get_plugin("sysinfo").get_metrics()["system"]["hostname"]
    psij = ec.get_plugin("psij")
    job = psij.submit_job({"executable": "/bin/echo", "arguments": ["relayed"]}, executor="local")
    wait_for(lambda: psij.get_job_status(job["job_id"])["state"] == "COMPLETED", 30, what="job on relayed child")
    assert psij.get_job_status(job["job_id"])["stdout"] == "relayed\n"
    child.stop()
    wait_for(lambda: edges.call("GET", "relay")["active"] == 0, 20, what="relayed connection closed")
    assert child.refresh().ended


def test_relay_refuses_strangers(parent):
    bc = parent.bc
    edges = bc.get_edge_client(parent.edge).get_plugin("edges")
    port = edges.call("GET", "relay")["port"]
    if port is None:  # the relay starts with the first child that may need it
        child = bc.get_edge_client(parent.edge).launch_edge(executor="local", duration=60, connectivity="relay",
                                                            plugins=["sysinfo"])
        port = edges.call("GET", "relay")["port"]
        child.stop()
    def connect(auth: str | None) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            head = "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n"
            if auth is not None:
                head += f"Proxy-Authorization: Basic {base64.b64encode(auth.encode()).decode()}\r\n"
            s.sendall((head + "\r\n").encode())
            return s.recv(100)

    assert connect(None).startswith(b"HTTP/1.1 407")
    assert connect("hpc-login.nosuch:guess").startswith(b"HTTP/1.1 407")
    assert connect(f"{parent.edge}.relayed:guess").startswith(b"HTTP/1.1 407")


def test_child_falls_back_to_the_relay_when_the_bridge_is_out_of_reach(parent, tmp_path):
    # A parent whose children are told a bridge address that does not answer (as if compute
    # nodes had no route to it): in auto mode the child tries it, then the relay.
    token = parent.bridge.seed(edge_tokens=[("isolated-login", "owner")])["edge"]["isolated-login"]
    agent = AgentProcess(parent.bridge.url, token, tmp_path, plugins=PLUGINS,
                         options=[*OPTIONS, "edges.child_url=http://127.0.0.1:9"]).start()
    try:
        wait_for(lambda: parent.bridge.edge_online(parent.token, "isolated-login"), 30, what="parent online")
        child = parent.bc.get_edge_client("isolated-login").launch_edge(executor="local", duration=300,
                                                                        plugins=["sysinfo"])
        child.wait_online(timeout=30, interval=0.2)
        assert parent.bc.get_edge_client("isolated-login").get_plugin("edges").call("GET", "relay")["active"] == 1
        assert parent.bc.get_edge_client(child.name).get_plugin("sysinfo").get_metrics()["system"]["hostname"]
        log = (agent.state_dir / "edges" / child.name / "agent.err").read_text()
        assert "127.0.0.1:9" in log  # it did try the direct route first
        child.stop()
    finally:
        agent.stop()


@pytest.mark.slurm
def test_parent_restart_does_not_orphan_its_children(parent, slurm):
    """Runs last: it restarts the module's parent. A child relayed through the parent
    loses its connection while the parent is down, and is back once it returns (the relay
    comes back on the same port); the parent follows the child's job again (psij
    re-attaches), so stopping it still cancels the job."""
    bc = parent.bc
    child = bc.get_edge_client(parent.edge).launch_edge(executor="slurm", queue="debug", duration=300,
                                                        connectivity="relay", plugins=["sysinfo"])
    native = child.job["native_id"]
    try:
        child.wait_online(timeout=SLURM_WAIT, interval=0.5)
        port = bc.get_edge_client(parent.edge).get_plugin("edges").call("GET", "relay")["port"]
        parent.agent.stop()
        wait_for(lambda: not child.refresh().online, 90, interval=0.5, what="relayed child cut off")
        assert not child.ended and _squeue_state(native) == "RUNNING"
        parent.agent.start()
        child.wait_online(timeout=90, interval=0.5)
        assert bc.get_edge_client(parent.edge).get_plugin("edges").call("GET", "relay")["port"] == port
        assert bc.get_edge_client(child.name).get_plugin("sysinfo").get_metrics()["system"]["batch_job"]["job_id"] \
            == native
        child.stop()
        wait_for(lambda: _squeue_state(native) in ("", "CANCELLED"), 60, what="slurm job cancelled")
        assert child.refresh().ended
    finally:
        subprocess.run(["scancel", native], capture_output=True)
