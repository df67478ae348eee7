"""queue_info parsers on fixtures: Slurm 22.05 (captured), Slurm 23.11 and PBS Pro (written).

Every scheduler output is read in JSON and in text form, and both must give the same records:
that is the plugin's promise to its callers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge_agent.plugins.queue_info import pbs, slurm
from edge_agent.plugins.queue_info.backend import raise_json_errors
from edge_agent.plugins.queue_info.commands import CommandFailed, CommandResult
from edge_agent.plugins.queue_info.records import (
    UNLIMITED,
    expand_hostlist,
    gpus_from_gres,
    parse_duration,
    queue_records,
    size_to_mb,
)

FIXTURES = Path(__file__).parent / "fixtures"
S2205 = FIXTURES / "slurm" / "22.05"
S2311 = FIXTURES / "slurm" / "23.11"
PBS = FIXTURES / "pbs"
T0_2311 = 1795860000  # submit time base of the 23.11 fixtures; squeue text was printed at T0 + 420


@pytest.fixture
def utc(monkeypatch):
    """Text outputs print local time; the fixtures were printed in UTC."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def text(path: Path) -> str:
    return path.read_text()


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# --- Slurm 22.05 (captured) --------------------------------------------------------------------

def test_slurm_2205_queues_from_json_nodes_and_from_text_agree():
    partitions = slurm.partitions_from_scontrol(slurm.parse_scontrol(text(S2205 / "scontrol_show_partition.txt")))
    from_json = queue_records(partitions, slurm.nodes_from_json(load(S2205 / "sinfo_json.json")["nodes"]))
    from_text = queue_records(partitions,
                              slurm.nodes_from_scontrol(slurm.parse_scontrol(text(S2205 / "scontrol_show_node.txt"))))
    assert from_json == from_text
    debug, batch = from_json["debug"], from_json["batch"]
    assert debug["default"] is True and batch["default"] is False
    assert debug["time_limit"] == 30 and batch["time_limit"] == UNLIMITED
    assert debug["state"] == "UP"
    assert (debug["nodes_total"], debug["nodes_available"], debug["nodes_idle"]) == (1, 1, 0)  # allocated node
    assert debug["cpus_per_node"] == 2 and debug["mem_per_node_mb"] == 24105 and debug["gpus_per_node"] == 0
    assert debug["node_states"] == {"allocated": 1} and debug["features"] == []


@pytest.mark.parametrize("snapshot", ["active", "finished"])
def test_slurm_2205_jobs_json_and_text_agree(utc, snapshot):
    data = load(S2205 / f"squeue_json_{snapshot}.json")
    # The text capture ran moments after the JSON one: pick "now" so running times line up.
    from_json = {j["job_id"]: j for j in slurm.jobs_from_squeue_json(data["jobs"], now=1795870684)}
    from_text = {j["job_id"]: j for j in slurm.jobs_from_squeue_text(text(S2205 / f"squeue_text_{snapshot}.txt"))}
    assert set(from_json) == set(from_text) == {"4", "5_1", "5_2", "5_[3-4]", "6", "7", "8"}
    for job_id, job in from_json.items():
        other = dict(from_text[job_id])
        if job_id == "7" and snapshot == "active":
            assert other.pop("reason").startswith("Nodes required")  # changed between the two captures
            job = {k: v for k, v in job.items() if k != "reason"}
        else:
            assert job == other, job_id
        assert {k: type(v) for k, v in job.items()} == {k: type(v) for k, v in other.items() if k in job}


def test_slurm_2205_job_fields(utc):
    jobs = {j["job_id"]: j for j in slurm.jobs_from_squeue_text(text(S2205 / "squeue_text_active.txt"))}
    array_pending = jobs["5_[3-4]"]
    assert array_pending["state"] == "PENDING" and array_pending["reason"] == "Resources"
    assert array_pending["job_name"] == "qi fixture|array"  # a separator-like character stays in the name
    assert array_pending["start_time"] is None and array_pending["time_limit"] == 5
    limited = jobs["6"]
    assert (limited["account"], limited["reason"], limited["cpus"]) == ("proj2", "AssocGrpCpuLimit", 2)
    assert limited["time_limit"] == 1440
    running = jobs["5_1"]
    assert running["state"] == "RUNNING" and running["node_list"] == "vm" and running["time_used"] == 14
    assert running["submit_time"] == 1795870670 and isinstance(running["priority"], int)
    finished = {j["job_id"]: j for j in slurm.jobs_from_squeue_text(text(S2205 / "squeue_text_finished.txt"))}
    assert (finished["7"]["state"], finished["8"]["state"], finished["4"]["state"]) == (
        "COMPLETED", "FAILED", "CANCELLED")


def test_slurm_2205_associations_and_fair_share():
    allocations = slurm.allocations_from_sacctmgr_text(text(S2205 / "sacctmgr_show_assoc.txt"))
    rows = {(a["account"], a["user"]): a for a in allocations}
    assert set(rows) == {("root", ""), ("root", "root"), ("proj1", ""), ("proj1", "root"), ("proj2", ""),
                         ("proj2", "root")}
    proj2 = rows[("proj2", "root")]
    assert proj2["max_jobs"] == 2 and proj2["grp_tres"] == "cpu=1" and proj2["qos"] == "normal"
    assert proj2["cluster"] == "edge" and proj2["shares"] == 1 and proj2["max_wall"] is None
    shares = slurm.fairshare_from_sshare(text(S2205 / "sshare.txt"))
    assert shares[("proj2", "root")] == 0.0 and shares[("proj2", "")] is None


def test_slurm_2205_rejects_json_for_scontrol_and_sacctmgr():
    # What the capture shows, and why the plugin reads these two as text on 22.05.
    assert "unrecognized option '--json'" in text(S2205 / "scontrol_json.stderr")
    assert "unrecognized option '--json'" in text(S2205 / "sacctmgr_json.stderr")
    assert slurm.version_tuple(text(S2205 / "sinfo_version.txt")) == (22, 5)
    backend = slurm.SlurmBackend(runner=None, version="22.05.8")
    assert backend.json_support() == {"sinfo": True, "squeue": True, "scontrol": False, "sacctmgr": False}


# --- Slurm 23.11 (data_parser v0.0.40) ---------------------------------------------------------

def _queues_2311_text():
    parts = slurm.partitions_from_scontrol(slurm.parse_scontrol(text(S2311 / "scontrol_show_partition.txt")))
    nodes = slurm.nodes_from_scontrol(slurm.parse_scontrol(text(S2311 / "scontrol_show_node.txt")))
    return queue_records(parts, nodes)


def test_slurm_2311_sinfo_array_gives_partitions_and_nodes():
    partitions, nodes = slurm.from_sinfo_entries(load(S2311 / "sinfo_json.json")["sinfo"])
    assert sorted(p.name for p in partitions) == ["cpu", "debug", "gpu", "long"]
    assert {n.name for n in nodes} == {"c001", "c002", "c003", "c004", "c005", "g01", "g02", "g03"}
    c001 = next(n for n in nodes if n.name == "c001")
    assert c001.partitions == ("cpu", "debug")  # a node in two partitions is one node
    queues = queue_records(partitions, nodes)
    cpu, gpu, debug, long_ = queues["cpu"], queues["gpu"], queues["debug"], queues["long"]
    # drained c004, powered-down c005 and the not-responding g03 are not available
    assert (cpu["nodes_total"], cpu["nodes_available"], cpu["nodes_idle"]) == (5, 3, 1)
    assert (gpu["nodes_total"], gpu["nodes_available"], gpu["nodes_idle"]) == (3, 2, 1)
    assert (debug["nodes_total"], debug["nodes_available"], debug["nodes_idle"]) == (3, 3, 2)
    assert (long_["nodes_total"], long_["nodes_available"], long_["nodes_idle"]) == (2, 1, 0)
    assert cpu["time_limit"] == 2880 and gpu["time_limit"] == 1440 and long_["time_limit"] == UNLIMITED
    assert debug["time_limit"] == 30 and debug["default_time"] == 10 and long_["state"] == "DRAIN"
    assert gpu["gpus_per_node"] == 4 and gpu["gpus_total"] == 12 and gpu["features"] == ["a100", "ib"]
    assert cpu["mem_per_node_mb"] == 515000 and cpu["cpus_per_node"] == 128
    assert gpu["node_states"] == {"down+not_responding": 1, "idle": 1, "mixed": 1}
    assert cpu["node_states"]["idle+drain"] == 1 and cpu["node_states"]["idle+powered_down"] == 1


def test_slurm_2311_json_and_text_queues_agree():
    partitions, nodes = slurm.from_sinfo_entries(load(S2311 / "sinfo_json.json")["sinfo"])
    for part in partitions:  # the JSON does not name the default; the backend asks sinfo for it
        part.default = part.name in slurm.default_partitions("cpu*\ngpu\ndebug\nlong\n")
    assert queue_records(partitions, nodes) == _queues_2311_text()
    scontrol_json = [slurm.partition_from_json(p) for p in load(S2311 / "scontrol_show_partition_json.json")
                     ["partitions"]]
    by_name = {p.name: p for p in partitions}
    for part in scontrol_json:
        expected = by_name[part.name]
        assert (part.state, part.time_limit, part.default_time) == (
            expected.state, expected.time_limit, expected.default_time)


def test_slurm_2311_jobs_json_and_text_agree(utc):
    from_json = slurm.jobs_from_squeue_json(load(S2311 / "squeue_json.json")["jobs"], now=T0_2311 + 420)
    from_text = slurm.jobs_from_squeue_text(text(S2311 / "squeue_text.txt"))
    assert from_json == from_text
    jobs = {j["job_id"]: j for j in from_json}
    assert set(jobs) == {"1201", "1202", "1203_[4-16]", "1203_3", "1220+0", "1220+1", "1190", "1150", "1151"}
    assert jobs["1190"]["time_limit"] is None  # an infinite limit
    assert jobs["1203_3"]["time_used"] == 220 and jobs["1201"]["time_limit"] == 720
    assert jobs["1151"]["state"] == "FAILED" and jobs["1220+1"]["partition"] == "debug"


def test_slurm_2311_associations_json_and_text_agree():
    from_json = slurm.allocations_from_sacctmgr_json(load(S2311 / "sacctmgr_show_assoc_json.json")["associations"])
    from_text = slurm.allocations_from_sacctmgr_text(text(S2311 / "sacctmgr_show_assoc.txt"))
    assert from_json == from_text
    rows = {(a["account"], a["user"]): a for a in from_json}
    alice = rows[("proj-chem", "alice")]
    assert (alice["max_jobs"], alice["max_submit"], alice["max_wall"]) == (20, 100, 2880)
    assert alice["qos"] == "normal,high" and alice["default_qos"] == "normal"
    ml = rows[("proj-ml", "")]
    assert ml["grp_tres"] == "cpu=512,gres/gpu=8" and ml["grp_jobs"] == 10 and ml["shares"] == 60
    assert rows[("proj-ml", "alice")]["shares"] is None  # Share=parent
    assert rows[("proj-ml", "alice")]["max_tres"] == "gres/gpu=4"
    assert rows[("proj-ml", "bob")]["partition"] == "gpu"


# --- Slurm values ----------------------------------------------------------------------------

@pytest.mark.parametrize(("spelling", "state", "available", "idle"), [
    (("idle", []), "idle", True, True),
    (("IDLE+DRAIN",), "idle+drain", False, False),
    (("idle", ["DRAIN"]), "idle+drain", False, False),
    (("drained",), "drain", False, False),
    (("MIXED+DRAIN",), "mixed+drain", False, False),
    (("DOWN*",), "down+not_responding", False, False),
    (("IDLE*",), "idle+not_responding", False, False),
    ((["IDLE", "NOT_RESPONDING"],), "idle+not_responding", False, False),
    (("IDLE+POWERED_DOWN",), "idle+powered_down", False, False),
    (("idle~",), "idle+powered_down", False, False),
    (("IDLE#",), "idle+powering_up", False, False),
    (("IDLE+POWERING_DOWN",), "idle+powering_down", False, False),
    (("IDLE+MAINTENANCE",), "idle+maintenance", False, False),
    (("MAINT",), "maintenance", False, False),
    (("MIXED+FAIL",), "mixed+fail", False, False),
    (("failing",), "fail", False, False),
    (("IDLE+REBOOT_ISSUED",), "idle+reboot_issued", False, False),
    (("idle@",), "idle+reboot_requested", True, True),
    (("ALLOCATED",), "allocated", True, False),
    (("MIXED",), "mixed", True, False),
    (("IDLE+COMPLETING",), "idle+completing", True, False),
    (("FUTURE",), "future", False, False),
    (("UNKNOWN",), "unknown", False, False),
    ((["IDLE", "PLANNED"],), "idle+planned", True, True),
])
def test_slurm_node_states(spelling, state, available, idle):
    node = slurm.node_from_tokens("n1", slurm.state_tokens(*spelling))
    assert (node.state, node.available, node.idle) == (state, available, idle)


def test_scontrol_values_may_contain_spaces():
    line = ("NodeName=n1 Arch=x86_64 OS=Linux 6.1.0 #1 SMP PREEMPT_DYNAMIC Debian  RealMemory=100 "
            "State=DOWN* Partitions=a,b Reason=Not responding, count=3 [slurm@2026-11-28T10:00:00]")
    (record,) = slurm.parse_scontrol(line)
    assert record["OS"] == "Linux 6.1.0 #1 SMP PREEMPT_DYNAMIC Debian"
    assert record["Reason"] == "Not responding, count=3 [slurm@2026-11-28T10:00:00]"
    assert record["Partitions"] == "a,b" and record["RealMemory"] == "100"


def test_data_parser_numbers_unwrap():
    assert slurm.unwrap({"set": True, "infinite": False, "number": 5}) == 5
    assert slurm.unwrap({"set": False, "infinite": False, "number": 0}) is None
    assert slurm.unwrap({"set": True, "infinite": True, "number": 0}, infinite="inf") == "inf"
    assert slurm.unwrap(7) == 7 and slurm.unwrap(None) is None
    assert slurm.time_limit_minutes({"set": True, "infinite": True, "number": 0}) == UNLIMITED
    assert slurm.time_limit_minutes("1-00:00:00") == 1440 and slurm.time_limit_minutes("UNLIMITED") == UNLIMITED


@pytest.mark.parametrize(("value", "bare", "seconds"), [
    ("5:00", "minutes", 300), ("30:00", "minutes", 1800), ("1:00:00", "minutes", 3600),
    ("00:30:00", "minutes", 1800), ("2-12:00:00", "minutes", 216000), ("2-12", "minutes", 216000),
    ("45", "minutes", 2700), (45, "minutes", 2700), ("3600", "seconds", 3600), ("01:00:00", "seconds", 3600),
    ("UNLIMITED", "minutes", None), ("INFINITE", "minutes", None), ("NONE", "minutes", None), ("", "minutes", None),
    ("N/A", "minutes", None), (None, "minutes", None),
])
def test_durations(value, bare, seconds):
    assert parse_duration(value, bare=bare) == seconds


def test_hostlists_gres_and_sizes():
    assert expand_hostlist("n[01-03,07],gpu1") == ["n01", "n02", "n03", "n07", "gpu1"]
    assert expand_hostlist("c[9-11]-ib") == ["c9-ib", "c10-ib", "c11-ib"]
    assert expand_hostlist("vm") == ["vm"]
    assert gpus_from_gres("gpu:a100:4(S:0-1)") == 4
    assert gpus_from_gres("gpu:a100:4(S:0,1),gpu:v100:2") == 6
    assert gpus_from_gres("gpu:2,mps:100") == 2 and gpus_from_gres("(null)") == 0 and gpus_from_gres("") == 0
    assert gpus_from_gres(["gpu:h100:8"]) == 8
    assert size_to_mb("527672488kb") == 515305 and size_to_mb("8gb") == 8192 and size_to_mb("1024mb") == 1024
    assert size_to_mb("24105M", default_unit="m") == 24105 and size_to_mb(None) == 0 and size_to_mb("junk") == 0


def test_json_errors_list_is_a_failure():
    result = CommandResult(["squeue", "--json"], '{"errors": []}', "", 0)
    raise_json_errors({"errors": []}, result)
    with pytest.raises(CommandFailed) as exc:
        raise_json_errors({"errors": [{"description": "Unable to contact slurm controller", "error_number": 1007,
                                       "source": "slurm_load_jobs()"}], "jobs": []}, result)
    assert exc.value.status == 502 and "Unable to contact slurm controller" in exc.value.detail


# --- PBS Pro ---------------------------------------------------------------------------------

def _pbs(kind: str, stem: str, key: str, header: str | None) -> dict[str, dict[str, str]]:
    if kind == "json":
        return {name: pbs.flatten(attrs) for name, attrs in load(PBS / f"{stem}.json").get(key, {}).items()}
    return pbs.parse_blocks(text(PBS / f"{stem}.txt"), header)


def _pbs_queues(kind: str) -> dict:
    server = _pbs(kind, "qstat_Bf", "Server", "Server:")
    parts, nodes = pbs.queues_and_nodes(_pbs(kind, "qstat_Qf", "Queue", "Queue:"),
                                        _pbs(kind, "pbsnodes_a", "nodes", None),
                                        default_queue=server["pbs01"]["default_queue"])
    return queue_records(parts, nodes)


def test_pbs_text_wrapping_is_undone():
    jobs = pbs.parse_blocks(text(PBS / "qstat_f.txt"), "Job Id:")
    job = jobs["1001.pbs01"]
    assert job["Error_Path"] == ("login01.cluster.example.org:/home/alice/runs/md_production_run_with_a_rather_"
                                 "long_descriptive_name/md_production_run_with_a_rather_long_descriptive_name.e1001")
    assert job["Variable_List"].split(",")[2] == "PBS_O_LOGNAME=alice"
    assert "PBS_O_PATH=/home/alice/.local/bin:/opt/pbs/bin:/usr/local/bin:/usr/bin:/usr/local/sbin:/usr/sbin" in \
        job["Variable_List"].split(",")
    server = pbs.parse_blocks(text(PBS / "qstat_Bf.txt"), "Server:")["pbs01"]
    assert server["state_count"] == "Transit:0 Queued:1 Held:1 Waiting:0 Running:3 Exiting:0 Begun:1 "
    # and the text form says the same as the JSON form, attribute by attribute
    assert jobs == _pbs("json", "qstat_f", "Jobs", "Job Id:")


def test_pbs_queues_json_and_text_agree():
    assert _pbs_queues("json") == _pbs_queues("text")


def test_pbs_queues():
    queues = _pbs_queues("text")
    assert set(queues) == {"workq", "gpu", "debug", "maint", "prod"}
    workq, gpu, prod = queues["workq"], queues["gpu"], queues["prod"]
    assert workq["default"] is True and workq["time_limit"] == 1440 and workq["default_time"] == 60
    # workq serves the nodes without a queue: free, job-busy, free-with-jobs, down+offline, offline
    assert (workq["nodes_total"], workq["nodes_available"], workq["nodes_idle"]) == (5, 3, 1)
    assert workq["node_states"] == {"down,offline": 1, "free": 2, "job-busy": 1, "offline": 1}
    assert workq["cpus_per_node"] == 64 and workq["mem_per_node_mb"] == 257390 and workq["gpus_per_node"] == 0
    assert (gpu["nodes_total"], gpu["nodes_available"], gpu["nodes_idle"]) == (3, 2, 1)
    assert gpu["gpus_per_node"] == 4 and gpu["features"] == ["ib", "nvme"] and gpu["time_limit"] == 720
    assert (prod["nodes_total"], prod["nodes_available"]) == (8, 5)  # a route queue counts its destinations
    assert queues["maint"]["state"] == "INACTIVE" and queues["maint"]["time_limit"] == UNLIMITED
    assert queues["debug"]["time_limit"] == 30


@pytest.mark.parametrize("stem", ["qstat_f", "qstat_fx"])
def test_pbs_jobs_json_and_text_agree(utc, stem):
    assert pbs.jobs_from_pbs(_pbs("json", stem, "Jobs", "Job Id:")) == pbs.jobs_from_pbs(
        _pbs("text", stem, "Jobs", "Job Id:"))


def test_pbs_jobs(utc):
    jobs = {j["job_id"]: j for j in pbs.jobs_from_pbs(_pbs("text", "qstat_fx", "Jobs", "Job Id:"))}
    assert set(jobs) == {"998", "999", "1001", "1002", "1003[]", "1004", "1005", "1006"}
    run = jobs["1001"]
    assert (run["state"], run["native_state"], run["user"], run["partition"]) == ("RUNNING", "R", "alice", "workq")
    assert (run["nodes"], run["cpus"], run["time_limit"], run["time_used"]) == (1, 64, 720, 8025)
    assert run["node_list"] == "cn002" and run["account"] == "chem01"
    assert run["submit_time"] == 1795852320 and run["start_time"] == 1795852395
    queued = jobs["1002"]
    assert queued["state"] == "PENDING" and queued["start_time"] is None and queued["account"] == "ml_project"
    assert queued["reason"].startswith("Not Running: Insufficient amount of resource: ngpus")
    held = jobs["1004"]
    assert (held["state"], held["native_state"]) == ("PENDING", "H")
    assert held["submit_time"] == 1793696400  # "Tue Nov  3 09:00:00 2026": two spaces before the day
    assert jobs["1003[]"]["state"] == "RUNNING" and jobs["1003[]"]["native_state"] == "B"
    assert jobs["998"]["state"] == "COMPLETED" and jobs["999"]["state"] == "FAILED"


def test_pbs_helpers():
    assert pbs._exec_hosts("cn001/0*16+cn002/0*16+cn001/1*16") == "cn001,cn002"
    assert pbs._job_id("1234[5].pbs01.example.org") == "1234[5]"
    assert pbs.pbs_time("1795852320") == 1795852320 and pbs.pbs_time("yesterday") is None
    assert pbs.queue_state({"enabled": "True", "started": "False"}) == "DOWN"
    assert pbs.queue_state({"enabled": "False", "started": "True"}) == "DRAIN"
    node = pbs.node_info("n", {"state": "free", "jobs": "1.s/0", "resources_available.ncpus": "8"}, ("q",))
    assert node.available and not node.idle
    node = pbs.node_info("n", {"state": "job-busy,offline", "resources_available.ncpus": "8"}, ("q",))
    assert not node.available
    for state in ("provisioning", "sleep", "stale", "maintenance", "state-unknown"):
        assert not pbs.node_info("n", {"state": state}, ()).available, state
