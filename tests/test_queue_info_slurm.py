"""queue_info against the real single-node Slurm 22.05 (``SLURM_WITH_DBD=1 bash slurm-up.sh``).

Partitions ``debug`` (default, MaxTime=30) and ``batch``; accounts proj1 and proj2 (proj2: a
GrpTRES of cpu=1 and MaxJobs=2 for root). Other engineers share this Slurm: the tests submit
their own jobs (held, so they use no CPU and cannot change state under the test), list them,
and cancel only those.
"""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import uuid

import pytest

from edge_agent.host import PluginHost
from edge_agent.plugin import Caller, Request
from edge_agent.plugins.queue_info.commands import CommandRunner
from edge_agent.plugins.queue_info.plugin import QueueInfoPlugin
from edge_agent.plugins.queue_info.records import UNLIMITED
from edge_agent.plugins.queue_info.slurm import SlurmBackend

pytestmark = pytest.mark.slurm
OWNER = Caller(user="owner", uid=1, role="owner", scope="full")
UP = "SLURM_WITH_DBD=1 bash ../shared/scripts/slurm-up.sh"


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def slurm() -> None:
    if not shutil.which("sinfo") or not shutil.which("scontrol"):
        pytest.skip(f"Slurm commands are not installed; start Slurm with: {UP}")
    ping = _run("scontrol", "ping")
    if ping.returncode != 0 or "UP" not in ping.stdout:
        pytest.skip(f"slurmctld does not answer `scontrol ping` ({(ping.stdout + ping.stderr).strip()}); "
                    f"start it with: {UP}")


@pytest.fixture(scope="module")
def slurmdbd(slurm) -> None:
    check = _run("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster")
    if check.returncode != 0:
        pytest.skip(f"Slurm accounting (slurmdbd) is not running ({check.stderr.strip()}); start it with: {UP}")


@pytest.fixture
def submit(slurm):
    """``submit(*sbatch args)`` → job id of a job of ours; every one is cancelled afterwards."""
    submitted: list[str] = []

    def sbatch(*args: str) -> str:
        name = f"qi-test-{uuid.uuid4().hex[:8]}"
        result = _run("sbatch", "--parsable", "-J", name, "-o", "/dev/null", *args, "--wrap", "sleep 300")
        assert result.returncode == 0, result.stderr
        job_id = result.stdout.strip().split(";")[0]
        submitted.append(job_id)
        return job_id

    yield sbatch
    for job_id in submitted:
        _run("scancel", job_id)


def make_plugin(tmp_path, **config) -> QueueInfoPlugin:
    host = PluginHost([QueueInfoPlugin], state_dir=tmp_path / "state", config={"queue_info": config})
    return host.plugins["queue_info"]


async def get(plugin: QueueInfoPlugin, path: str, query: str = "") -> tuple[int, dict]:
    response = await plugin.handle(Request("GET", path, query=query, caller=OWNER))
    return response.status, json.loads(response.body)


async def sid_of(plugin: QueueInfoPlugin) -> str:
    return (await plugin.create_session(OWNER, {})).sid


STATIC_QUEUE_FIELDS = ("name", "state", "default", "time_limit", "default_time", "nodes_total", "cpus_total",
                       "cpus_per_node", "mem_per_node_mb", "gpus_per_node", "gpus_total", "features")


async def test_detects_slurm_22_05_and_what_json_it_has(tmp_path, slurm):
    plugin = make_plugin(tmp_path)
    status, body = await get(plugin, f"backend/{await sid_of(plugin)}")
    assert status == 200 and (body["backend"], body["detected_by"]) == ("slurm", "auto")
    assert body["version"].startswith("22.05")
    assert body["json"] == {"sinfo": True, "squeue": True, "scontrol": False, "sacctmgr": False}
    await plugin.stop()


async def test_partitions_in_json_and_text_mode_agree(tmp_path, slurm):
    answers = {}
    for mode in (True, False):
        plugin = make_plugin(tmp_path, json=mode)
        status, body = await get(plugin, f"get_info/{await sid_of(plugin)}")
        assert status == 200, body
        answers[mode] = body
        await plugin.stop()
    as_json, as_text = answers[True], answers[False]
    assert as_json["meta"]["commands"] == ["sinfo --json", "scontrol -o show partition"]
    assert as_text["meta"]["commands"] == ["scontrol -o show node", "scontrol -o show partition"]
    assert set(as_json["queues"]) == set(as_text["queues"]) >= {"debug", "batch"}
    for name, queue in as_json["queues"].items():
        other = as_text["queues"][name]
        assert {k: queue[k] for k in STATIC_QUEUE_FIELDS} == {k: other[k] for k in STATIC_QUEUE_FIELDS}, name
        # node states may move between the two reads (other people's jobs), their types may not
        assert {k: type(v) for k, v in queue.items()} == {k: type(v) for k, v in other.items()}, name
    debug, batch = as_json["queues"]["debug"], as_json["queues"]["batch"]
    assert debug["default"] is True and batch["default"] is False
    assert debug["time_limit"] == 30 and batch["time_limit"] == UNLIMITED
    assert debug["nodes_total"] >= 1 and debug["cpus_per_node"] >= 1 and debug["mem_per_node_mb"] > 0
    assert 0 <= debug["nodes_idle"] <= debug["nodes_available"] <= debug["nodes_total"]


async def test_jobs_in_json_and_text_mode_agree(tmp_path, submit):
    single = submit("--hold", "-p", "debug", "-t", "5")
    array = submit("--hold", "-p", "batch", "-t", "7", "--array=1-3")
    runner = CommandRunner()
    records = {}
    for use_json in (True, False):
        backend = SlurmBackend(runner, use_json=use_json, version="22.05")
        collected = backend.collect_jobs(user=getpass.getuser(), include_finished=False)
        assert collected.mode == ("json" if use_json else "text")
        records[use_json] = {j["job_id"]: j for j in collected.data}
    for job_id in (single, f"{array}_[1-3]"):
        assert records[True][job_id] == records[False][job_id], job_id
    job = records[True][single]
    assert (job["state"], job["reason"], job["partition"], job["time_limit"]) == ("PENDING", "JobHeldUser", "debug", 5)
    assert job["user"] == getpass.getuser() and job["job_name"].startswith("qi-test-")
    assert job["start_time"] is None and job["time_used"] == 0 and isinstance(job["submit_time"], int)
    assert records[True][f"{array}_[1-3]"]["time_limit"] == 7


async def test_list_jobs_routes_on_real_slurm(tmp_path, submit):
    job_id = submit("--hold", "-p", "debug", "-t", "5")
    plugin = make_plugin(tmp_path)
    sid = await sid_of(plugin)
    status, body = await get(plugin, f"list_jobs/{sid}/debug", "force=true")
    assert status == 200 and job_id in {j["job_id"] for j in body["jobs"]}
    assert body["meta"]["mode"] == "json" and body["meta"]["commands"][0].startswith("squeue --json")
    _, body = await get(plugin, f"list_jobs/{sid}/batch")
    assert job_id not in {j["job_id"] for j in body["jobs"]}
    _, body = await get(plugin, f"list_jobs/{sid}", f"user={getpass.getuser()}&state=PENDING")
    assert job_id in {j["job_id"] for j in body["jobs"]}
    # 22.05's squeue --json ignores -u: the plugin filters, so another user sees none of our jobs
    _, body = await get(plugin, f"list_jobs/{sid}", "user=daemon&force=true")
    assert body["jobs"] == [] and "-u daemon" in body["meta"]["commands"][0]
    status, body = await get(plugin, f"list_jobs/{sid}/nosuchpartition")
    assert status == 404 and body["error"] == "unknown_queue" and "debug" in body["detail"]
    await plugin.stop()


async def test_a_cancelled_job_is_listed_only_when_asked_for(tmp_path, submit):
    job_id = submit("--hold", "-p", "debug", "-t", "5")
    assert _run("scancel", job_id).returncode == 0
    plugin = make_plugin(tmp_path)
    sid = await sid_of(plugin)
    _, body = await get(plugin, f"list_jobs/{sid}", "force=true")
    assert job_id not in {j["job_id"] for j in body["jobs"]}
    _, body = await get(plugin, f"list_jobs/{sid}", "state=all")
    (job,) = [j for j in body["jobs"] if j["job_id"] == job_id]
    assert job["state"] == "CANCELLED"
    await plugin.stop()


@pytest.mark.slurmdbd
async def test_allocations_on_real_slurm(tmp_path, slurmdbd):
    answers = {}
    for mode in (True, False):
        plugin = make_plugin(tmp_path, json=mode)
        sid = await sid_of(plugin)
        status, body = await get(plugin, f"list_allocations/{sid}")
        assert status == 200, body
        answers[mode] = body
        status, everyone = await get(plugin, f"list_allocations/{sid}", "user=*")
        assert status == 200 and everyone["user"] == "*"
        await plugin.stop()
    assert answers[True]["allocations"] == answers[False]["allocations"]
    mine = answers[True]
    assert mine["user"] == getpass.getuser()
    assert mine["meta"]["commands"][0].startswith("sacctmgr -n -P show assoc where user=")  # 22.05: no --json
    rows = {(a["account"], a["user"]): a for a in mine["allocations"]}
    assert {("proj1", "root"), ("proj2", "root")} <= set(rows)
    proj2 = rows[("proj2", "root")]
    assert (proj2["max_jobs"], proj2["grp_tres"], proj2["qos"]) == (2, "cpu=1", "normal")
    assert isinstance(proj2["fairshare"], float) and proj2["cluster"]
    account_rows = [a for a in everyone["allocations"] if a["user"] == ""]
    assert {"proj1", "proj2"} <= {a["account"] for a in account_rows}
