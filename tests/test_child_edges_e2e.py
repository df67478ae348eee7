"""Child edges (edges on compute nodes), end to end: a real bridge, a real parent agent
with the psij and edges plugins, and a real child agent that the parent starts as a psij
job (the ``local`` executor here; ``tests/test_child_edges_slurm.py`` does it in Slurm).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from edge_agent.client import BridgeClient
from edge_agent.client.errors import BridgeError, Forbidden, NotFound
from tests.support.live import wait_for

PLUGINS = "sysinfo,psij,edges"
OPTIONS = ["psij.poll_interval=1"]


@pytest.fixture
def parent(edge_setup):
    return edge_setup(plugins=PLUGINS, options=OPTIONS)


def child_token_file(setup, child: str) -> Path:
    return setup.agent.state_dir / "edges" / child / "token"


def test_child_edge_launches_registers_serves_and_stops(parent):
    bc = BridgeClient(parent.bridge.url, token=parent.token)
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
    assert [c.name for c in bc.get_edge_client(parent.edge).children()] == [child.name]

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
    bc = BridgeClient(parent.bridge.url, token=parent.token)
    child = bc.get_edge_client(parent.edge).launch_edge(executor="local", duration=12, bye_margin=8, name="short",
                                                        plugins=["sysinfo"])
    child.wait_online(timeout=30, interval=0.2)
    # 4 s after it started it says bye (12 s walltime, 8 s margin): ended, not merely offline.
    wait_for(lambda: child.refresh().ended, 30, interval=0.2, what="child ended")
    assert not child.online
    with pytest.raises(BridgeError) as err:
        bc.get_edge_client(child.name).get_plugin("sysinfo").get_metrics()
    assert err.value.status == 410 and "ended with its allocation" in err.value.detail
    # Its job ends on its own, well before the walltime (the agent exited after its bye).
    psij = bc.get_edge_client(parent.edge).get_plugin("psij")
    wait_for(lambda: psij.get_job_status(child.job["job_id"])["state"] == "COMPLETED", 20, what="job completed")


def test_others_cannot_launch_see_or_use_children(parent):
    bridge = parent.bridge
    seeded = bridge.seed(users=["mallory", "viewer"], api_tokens=["mallory", "viewer"])
    owner = BridgeClient(bridge.url, token=parent.token)
    owner._http.post(f"/api/v1/edges/{parent.edge}/grants", json={"user": "viewer", "role": "viewer"})
    mallory = BridgeClient(bridge.url, token=seeded["api"]["mallory"])
    viewer = BridgeClient(bridge.url, token=seeded["api"]["viewer"])
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
    client = BridgeClient(parent.bridge.url, token=parent.token)
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
    assert client.get_edge_client(parent.edge).children() == []
    # Stopping an edge that is not a child.
    response = client._http.post(f"/api/v1/edges/{parent.edge}/stop")
    assert response.status_code == 400 and "not a child edge" in response.json()["detail"]
