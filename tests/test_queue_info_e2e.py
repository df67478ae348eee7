"""queue_info end to end: a real bridge process, a real agent process, the SDK.

Slurm is the real 22.05 of this machine; PBS is the fake ``qstat``/``pbsnodes`` of
tests/fixtures/pbs on the agent's PATH (PBS cannot run here).
"""

from __future__ import annotations

import getpass
import runpy
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from edge_agent.client import BridgeClient, BridgeUnavailable, NotFound
from edge_agent.plugins.queue_info.client import NoScheduler, QueueInfoClient, UnknownQueue

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).parent / "fixtures"
UP = "SLURM_WITH_DBD=1 bash ../shared/scripts/slurm-up.sh"


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def held_job():
    """A held (never running) job of ours in the debug partition, cancelled afterwards."""
    if not shutil.which("sbatch"):
        pytest.skip(f"Slurm is not installed; start it with: {UP}")
    if _run("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster").returncode != 0:
        pytest.skip(f"Slurm with accounting (slurmdbd) is not running; start it with: {UP}")
    result = _run("sbatch", "--parsable", "--hold", "-J", f"qi-e2e-{uuid.uuid4().hex[:8]}", "-p", "debug", "-t", "5",
                  "-o", "/dev/null", "--wrap", "sleep 300")
    if result.returncode != 0:
        pytest.skip(f"sbatch failed, is slurmctld up? ({result.stderr.strip()}); start it with: {UP}")
    job_id = result.stdout.strip()
    yield job_id
    _run("scancel", job_id)


@pytest.mark.slurm
@pytest.mark.slurmdbd
def test_sdk_reads_queues_jobs_and_allocations_of_real_slurm(edge_setup, held_job):
    s = edge_setup(plugins="queue_info")
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        qi = bc.get_edge_client(s.edge).get_plugin("queue_info")
        assert isinstance(qi, QueueInfoClient)
        backend = qi.backend()
        assert (backend["backend"], backend["detected_by"]) == ("slurm", "auto")

        info = qi.get_info()
        debug = info["queues"]["debug"]
        assert debug["default"] is True and debug["time_limit"] == 30
        assert info["queues"]["batch"]["time_limit"] == "UNLIMITED"
        assert info["meta"]["cached"] is False
        assert qi.get_info()["meta"]["cached"] is True
        assert qi.get_info(force=True)["meta"]["cached"] is False

        jobs = qi.list_jobs("debug", force=True)["jobs"]
        (mine,) = [j for j in jobs if j["job_id"] == held_job]
        assert (mine["state"], mine["reason"], mine["user"]) == ("PENDING", "JobHeldUser", getpass.getuser())
        assert held_job in {j["job_id"] for j in qi.list_jobs(user=getpass.getuser())["jobs"]}
        assert held_job not in {j["job_id"] for j in qi.list_jobs("batch")["jobs"]}
        with pytest.raises(UnknownQueue) as exc:
            qi.list_jobs("nosuchqueue")
        assert isinstance(exc.value, NotFound) and exc.value.status == 404

        allocations = qi.list_allocations()
        assert allocations["user"] == getpass.getuser()
        rows = {(a["account"], a["user"]): a for a in allocations["allocations"]}
        assert rows[("proj2", getpass.getuser())]["max_jobs"] == 2
        assert rows[("proj2", getpass.getuser())]["grp_tres"] == "cpu=1"
        everyone = qi.list_allocations(user="*")["allocations"]
        assert any(a["user"] == "" and a["account"] == "proj1" for a in everyone)

    # the same route as curl sees it, through the versioned twin of the proxy path
    with s.bridge.client(s.token) as c:
        sid = c.post(f"/{s.edge}/queue_info/register_session").json()["sid"]
        r = c.get(f"/api/v1/edges/{s.edge}/queue_info/list_jobs/{sid}/debug")
        assert r.status_code == 200 and held_job in {j["job_id"] for j in r.json()["jobs"]}


def test_sdk_reads_pbs_through_fake_commands_on_the_agents_path(edge_setup, tmp_path):
    fake_bin = runpy.run_path(str(FIXTURES / "pbs" / "fake_pbs.py"))["install"](tmp_path / "pbs-bin")
    # Only the fakes on PATH (Slurm's own commands live in /usr/bin): PBS must be *detected*.
    s = edge_setup(plugins="queue_info", env={"PATH": str(fake_bin)})
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        qi = bc.get_edge_client(s.edge).get_plugin("queue_info")
        backend = qi.backend()
        assert (backend["backend"], backend["detected_by"], backend["version"]) == ("pbs", "auto", "2022.1.3")
        queues = qi.get_info()["queues"]
        assert queues["workq"]["default"] is True and queues["workq"]["time_limit"] == 1440
        assert (queues["gpu"]["nodes_total"], queues["gpu"]["nodes_available"], queues["gpu"]["gpus_per_node"]) == (
            3, 2, 4)
        jobs = qi.list_jobs("gpu")["jobs"]
        assert [(j["job_id"], j["state"], j["user"]) for j in jobs] == [("1002", "PENDING", "bob"),
                                                                        ("1006", "RUNNING", "bob")]
        finished = qi.list_jobs(user="alice", state="all")["jobs"]
        assert {j["job_id"]: j["state"] for j in finished}["999"] == "FAILED"
        assert qi.list_allocations(user="*")["allocations"] == []


def test_sdk_raises_no_scheduler_when_the_edge_has_none(edge_setup):
    s = edge_setup(plugins="queue_info", options=["queue_info.backend=none"])
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        qi = bc.get_edge_client(s.edge).get_plugin("queue_info")
        with pytest.raises(NoScheduler) as exc:
            qi.get_info()
        assert isinstance(exc.value, BridgeUnavailable) and exc.value.status == 503
        assert exc.value.error == "no_scheduler" and "queue_info.backend=none" in exc.value.detail
        assert qi.backend()["backend"] == "none"
