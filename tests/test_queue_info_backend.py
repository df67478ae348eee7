"""queue_info's commands, detection, backends and routes, with fake scheduler commands.

The fakes (tests/fixtures/slurm/fake_slurm.py, tests/fixtures/pbs/fake_pbs.py) are real
executables on a PATH of their own that print the fixtures, fail, hang or reject options on
demand, and log every call, so these tests run the plugin's real subprocess code. Slurm 22.05
itself is tested in test_queue_info_slurm.py.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import runpy
import sys
from pathlib import Path

import psutil
import pytest

from edge_agent.host import PluginHost
from edge_agent.plugin import Caller, Request
from edge_agent.plugins.queue_info.backend import Trace
from edge_agent.plugins.queue_info.commands import (
    CommandFailed,
    CommandNotFound,
    CommandRunner,
    CommandTimeout,
    NoScheduler,
)
from edge_agent.plugins.queue_info.detect import detect, make_backend
from edge_agent.plugins.queue_info.pbs import PbsBackend
from edge_agent.plugins.queue_info.plugin import QueueInfoPlugin, Settings
from edge_agent.plugins.queue_info.slurm import AccountingUnavailable, SlurmBackend

FIXTURES = Path(__file__).parent / "fixtures"
OWNER = Caller(user="owner", uid=1, role="owner", scope="full")
OTHER = Caller(user="someone", uid=2, role="user", scope="full")


@pytest.fixture
def slurm_bin(tmp_path) -> Path:
    return runpy.run_path(str(FIXTURES / "slurm" / "fake_slurm.py"))["install"](tmp_path / "slurm-bin")


@pytest.fixture
def pbs_bin(tmp_path) -> Path:
    return runpy.run_path(str(FIXTURES / "pbs" / "fake_pbs.py"))["install"](tmp_path / "pbs-bin")


@pytest.fixture
def calls(tmp_path, monkeypatch):
    """Every fake command appends its argv here; ``calls()`` reads them back."""
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    monkeypatch.setenv("FAKE_PBS_LOG", str(log))

    def read() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return read


def script(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


# --- running commands ------------------------------------------------------------------------

def test_commands_run_without_a_shell(tmp_path):
    bin_dir = tmp_path / "bin"
    script(bin_dir, "argv", "import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    marker = tmp_path / "pwned"
    args = [f"$(touch {marker})", f"; touch {marker}", "`id`", "a b"]
    result = CommandRunner(bin_dir=str(bin_dir)).run(["argv", *args])
    assert json.loads(result.stdout) == args
    assert not marker.exists()


def test_a_failing_command_is_a_502_with_its_stderr(slurm_bin, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_FAIL", "sinfo")
    with pytest.raises(CommandFailed) as exc:
        CommandRunner(bin_dir=str(slurm_bin)).run(["sinfo", "--json"])
    err = exc.value
    assert err.status == 502 and err.error == "scheduler_error" and err.returncode == 1
    assert "Unable to contact slurm controller" in err.stderr and "`sinfo --json` failed" in err.detail
    body = json.loads(err.to_response().body)
    assert body["command"] == "sinfo --json" and body["returncode"] == 1
    assert "Unable to contact slurm controller" in body["stderr"]


def test_a_hanging_command_is_killed_and_answers_504(slurm_bin, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_SLEEP", "60")
    with pytest.raises(CommandTimeout) as exc:
        CommandRunner(bin_dir=str(slurm_bin), timeout=0.5).run(["squeue", "--json"])
    assert exc.value.status == 504 and exc.value.error == "scheduler_timeout"
    assert "did not finish within 0.5 s" in exc.value.detail
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(slurm_bin) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_one_answer_has_one_time_budget_for_all_its_commands(slurm_bin):
    class Recorder(CommandRunner):
        def run(self, argv, *, timeout=None):
            self.seen.append(timeout)
            return super().run(argv, timeout=timeout)

    runner = Recorder(bin_dir=str(slurm_bin), timeout=20.0)
    runner.seen = []
    trace = Trace(runner)
    trace.run(["sinfo", "-h", "-o", "%P"])
    trace.run(["sinfo", "-h", "-o", "%P"])
    assert 0 < runner.seen[1] <= runner.seen[0] <= 20.0  # the second command gets what the first left
    trace.deadline -= 60  # as if a slow first command had used the budget up
    with pytest.raises(CommandTimeout) as exc:
        trace.run(["squeue", "--json"])
    assert exc.value.status == 504 and "was not run" in exc.value.detail and len(runner.seen) == 2


def test_a_missing_command_is_a_503(tmp_path):
    with pytest.raises(CommandNotFound) as exc:
        CommandRunner(path=str(tmp_path)).run(["sinfo", "--json"])
    assert exc.value.status == 503 and exc.value.error == "command_not_found" and "sinfo" in exc.value.detail


def test_the_environment_cannot_change_what_the_commands_print(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    script(bin_dir, "envdump", "import json, os\nprint(json.dumps(dict(os.environ)))\n")
    monkeypatch.setenv("SQUEUE_USERS", "bob")
    monkeypatch.setenv("SINFO_FORMAT", "%N")
    monkeypatch.setenv("SLURM_TIME_FORMAT", "relative")
    env = json.loads(CommandRunner(bin_dir=str(bin_dir), env={"SLURM_CONF": "/etc/slurm/other.conf"})
                     .run(["envdump"]).stdout)
    assert "SQUEUE_USERS" not in env and "SINFO_FORMAT" not in env
    assert env["SLURM_TIME_FORMAT"] == "standard" and env["SLURM_CONF"] == "/etc/slurm/other.conf"


# --- detection -------------------------------------------------------------------------------

def test_detects_slurm_and_its_version(slurm_bin):
    found = detect("auto", CommandRunner(path=str(slurm_bin)))
    assert (found.backend, found.how, found.version) == ("slurm", "auto", "23.11.4")
    assert found.reason == f"found sinfo at {slurm_bin / 'sinfo'}"
    assert found.commands["sacctmgr"] == str(slurm_bin / "sacctmgr")


def test_detects_pbs(pbs_bin):
    found = detect("auto", CommandRunner(path=str(pbs_bin)))
    assert (found.backend, found.version) == ("pbs", "2022.1.3")


def test_slurm_wins_when_both_are_installed(slurm_bin, pbs_bin):
    # Slurm's Torque wrappers put a qstat next to sinfo; that is still Slurm.
    assert detect("auto", CommandRunner(path=f"{pbs_bin}:{slurm_bin}")).backend == "slurm"


def test_detects_pbs_from_pbs_conf_when_it_is_not_on_path(tmp_path):
    pbs_exec = tmp_path / "opt" / "pbs"
    runpy.run_path(str(FIXTURES / "pbs" / "fake_pbs.py"))["install"](pbs_exec / "bin")
    conf = tmp_path / "pbs.conf"
    conf.write_text(f"PBS_SERVER=pbs01\nPBS_EXEC={pbs_exec}\nPBS_HOME=/var/spool/pbs\n")
    found = detect("auto", CommandRunner(path=str(tmp_path / "empty")), pbs_conf=str(conf))
    assert (found.backend, found.bin_dir) == ("pbs", str(pbs_exec / "bin"))
    backend = make_backend(found, CommandRunner(path=str(tmp_path / "empty")))
    assert "workq" in backend.collect_info().data


def test_nothing_found_means_none_with_a_reason(tmp_path):
    found = detect("auto", CommandRunner(path=str(tmp_path)), pbs_conf=str(tmp_path / "no-pbs.conf"))
    assert found.backend == "none" and "neither Slurm" in found.reason and str(tmp_path) in found.reason
    with pytest.raises(NoScheduler) as exc:
        make_backend(found, CommandRunner(path=str(tmp_path))).collect_info()
    assert exc.value.status == 503 and exc.value.error == "no_scheduler"
    assert "queue_info.backend" in exc.value.detail


def test_configuration_forces_the_backend(slurm_bin, pbs_bin, tmp_path):
    both = CommandRunner(path=f"{pbs_bin}:{slurm_bin}")
    assert (detect("pbs", both).backend, detect("pbs", both).how) == ("pbs", "config")
    assert detect("none", both).backend == "none"
    invalid = detect("lsf", both)
    assert invalid.backend == "none" and "'lsf' is not one of" in invalid.reason
    missing = detect("slurm", CommandRunner(path=str(tmp_path)))
    assert missing.backend == "slurm" and "missing commands: sinfo, squeue, scontrol" in missing.reason
    with pytest.raises(CommandNotFound):
        make_backend(missing, CommandRunner(path=str(tmp_path))).collect_info()


# --- Slurm 23.11 through its commands ---------------------------------------------------------

def test_slurm_json_and_text_modes_agree(slurm_bin, calls):
    runner = CommandRunner(bin_dir=str(slurm_bin))
    as_json = SlurmBackend(runner, use_json=True, version="23.11.4")
    as_text = SlurmBackend(runner, use_json=False, version="23.11.4")
    info_json, info_text = as_json.collect_info(), as_text.collect_info()
    assert info_json.data == info_text.data
    assert info_json.commands == ["sinfo --json", "sinfo -h -o %P"]  # JSON lacks the default partition
    assert info_text.commands == ["scontrol -o show node", "scontrol -o show partition"]
    assert info_text.mode == "text" and info_json.mode == "mixed"
    assert info_json.data["cpu"]["default"] is True and info_json.data["gpu"]["default"] is False

    def strip(jobs):  # running jobs' time_used is computed from "now" in JSON mode
        return [{k: v for k, v in j.items() if k != "time_used"} for j in jobs]

    jobs_json = as_json.collect_jobs(user=None, include_finished=True)
    jobs_text = as_text.collect_jobs(user=None, include_finished=True)
    assert strip(jobs_json.data) == strip(jobs_text.data) and jobs_json.mode == "json"
    bob = as_json.collect_jobs(user="bob", include_finished=False).data
    assert {j["user"] for j in bob} == {"bob"} and len(bob) == 3

    allocs_json = as_json.collect_allocations(user=None)
    allocs_text = as_text.collect_allocations(user=None)
    assert allocs_json.data == allocs_text.data
    assert allocs_json.commands[0] == "sacctmgr --json show assoc"
    fair = {(a["account"], a["user"]): a["fairshare"] for a in allocs_json.data}
    assert fair[("proj-chem", "alice")] == 0.8125 and fair[("proj-chem", "")] is None
    alice = as_json.collect_allocations(user="alice").data
    assert {a["account"] for a in alice} == {"proj-chem", "proj-ml"} and {a["user"] for a in alice} == {"alice"}


def test_json_that_a_command_rejects_is_read_as_text_from_then_on(slurm_bin, calls, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_NO_JSON", "1")
    backend = SlurmBackend(CommandRunner(bin_dir=str(slurm_bin)), version=None)  # version unknown: try JSON
    first = backend.collect_info()
    assert first.commands == ["sinfo --json", "scontrol -o show node", "scontrol --json show partition",
                              "scontrol -o show partition"]
    assert first.mode == "text" and "sinfo: JSON output unsupported, used text" in first.notes
    assert backend.json_support()["sinfo"] is False and backend.json_support()["scontrol"] is False
    second = backend.collect_info()
    assert second.commands == ["scontrol -o show node", "scontrol -o show partition"]
    assert second.data == first.data


def test_json_is_not_tried_where_the_release_has_none(slurm_bin, calls):
    backend = SlurmBackend(CommandRunner(bin_dir=str(slurm_bin)), version="22.05.8")
    backend.collect_allocations(user=None)
    assert calls()[0][:3] == ["sacctmgr", "-n", "-P"]


def test_unreadable_json_falls_back_to_text_this_time_only(slurm_bin, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_BAD_JSON", "squeue")
    backend = SlurmBackend(CommandRunner(bin_dir=str(slurm_bin)), version="23.11.4")
    jobs = backend.collect_jobs(user=None, include_finished=False)
    assert jobs.mode == "text" and "squeue: unreadable JSON output, used text" in jobs.notes
    assert backend.json_support()["squeue"] is True


def test_a_real_failure_is_reported_not_hidden_behind_the_text_form(slurm_bin, monkeypatch, calls):
    monkeypatch.setenv("FAKE_SLURM_FAIL", "squeue")
    backend = SlurmBackend(CommandRunner(bin_dir=str(slurm_bin)), version="23.11.4")
    with pytest.raises(CommandFailed) as exc:
        backend.collect_jobs(user=None, include_finished=False)
    assert "Unable to contact slurm controller" in exc.value.stderr
    assert [c[0] for c in calls()] == ["squeue"] and backend.json_support()["squeue"] is True


def test_no_accounting_storage_is_a_clear_503(slurm_bin, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_NO_DBD", "1")
    with pytest.raises(AccountingUnavailable) as exc:
        SlurmBackend(CommandRunner(bin_dir=str(slurm_bin)), version="23.11.4").collect_allocations(user=None)
    assert exc.value.status == 503 and "slurmdbd" in exc.value.detail


# --- PBS through its commands ------------------------------------------------------------------

def test_pbs_json_and_text_modes_agree(pbs_bin, calls):
    runner = CommandRunner(bin_dir=str(pbs_bin))
    as_json, as_text = PbsBackend(runner, use_json=True), PbsBackend(runner, use_json=False)
    info_json, info_text = as_json.collect_info(), as_text.collect_info()
    assert info_json.data == info_text.data and info_json.mode == "json" and info_text.mode == "text"
    assert info_json.commands == ["qstat -Qf -F json", "pbsnodes -a -F json", "qstat -Bf -F json"]
    assert info_json.data["workq"]["default"] is True
    active = as_json.collect_jobs(user=None, include_finished=False)
    assert active.data == as_text.collect_jobs(user=None, include_finished=False).data
    assert active.commands == ["qstat -f -F json"]
    everything = as_json.collect_jobs(user="alice", include_finished=True)
    assert everything.commands == ["qstat -f -x -F json"]
    assert {j["job_id"] for j in everything.data} == {"998", "999", "1001", "1003[]"}
    allocations = as_json.collect_allocations(user=None)
    assert allocations.data == [] and "PBS keeps no accounts" in allocations.notes[0]


def test_pbs_without_json_output_is_read_as_text(pbs_bin, monkeypatch):
    monkeypatch.setenv("FAKE_PBS_NO_JSON", "1")
    backend = PbsBackend(CommandRunner(bin_dir=str(pbs_bin)))
    info = backend.collect_info()
    assert info.mode == "text" and info.data["gpu"]["gpus_per_node"] == 4
    assert backend.json_support() == {"qstat": False, "pbsnodes": False}


def test_pbs_server_down_is_a_502(pbs_bin, monkeypatch):
    monkeypatch.setenv("FAKE_PBS_DOWN", "1")
    with pytest.raises(CommandFailed) as exc:
        PbsBackend(CommandRunner(bin_dir=str(pbs_bin))).collect_jobs(user=None, include_finished=False)
    assert "cannot connect to server pbs01" in exc.value.stderr and exc.value.returncode == 3


# --- the plugin's routes (the framework's dispatch, no bridge) ---------------------------------

def make_plugin(tmp_path: Path, **config) -> QueueInfoPlugin:
    host = PluginHost([QueueInfoPlugin], state_dir=tmp_path / "state", config={"queue_info": config})
    return host.plugins["queue_info"]


async def get(plugin: QueueInfoPlugin, path: str, query: str = "", caller: Caller = OWNER) -> tuple[int, dict]:
    response = await plugin.handle(Request("GET", path, query=query, caller=caller))
    return response.status, json.loads(response.body)


async def session(plugin: QueueInfoPlugin, caller: Caller = OWNER) -> str:
    return (await plugin.create_session(caller, {})).sid


async def test_routes_answer_with_meta_and_share_one_cache(tmp_path, slurm_bin, calls):
    plugin = make_plugin(tmp_path, backend="slurm", bin_dir=str(slurm_bin))
    mine, theirs = await session(plugin), await session(plugin, OTHER)
    status, body = await get(plugin, f"get_info/{mine}")
    assert status == 200 and body["queues"]["gpu"]["gpus_per_node"] == 4
    meta = body["meta"]
    assert (meta["backend"], meta["cached"], meta["commands"][0]) == ("slurm", False, "sinfo --json")
    status, body = await get(plugin, f"get_info/{theirs}", caller=OTHER)  # another session, same cache
    assert status == 200 and body["meta"]["cached"] is True
    assert sum(1 for c in calls() if c == ["sinfo", "--json"]) == 1
    status, body = await get(plugin, f"get_info/{mine}", "force=true")
    assert body["meta"]["cached"] is False
    assert sum(1 for c in calls() if c == ["sinfo", "--json"]) == 2
    await plugin.stop()


async def test_concurrent_requests_run_the_commands_once(tmp_path, slurm_bin, calls):
    plugin = make_plugin(tmp_path, backend="slurm", bin_dir=str(slurm_bin))
    sid = await session(plugin)
    answers = await asyncio.gather(*(get(plugin, f"list_jobs/{sid}") for _ in range(12)))
    assert {status for status, _ in answers} == {200}
    assert sum(1 for c in calls() if c[0] == "squeue") == 1
    await plugin.stop()


async def test_list_jobs_filters(tmp_path, slurm_bin):
    plugin = make_plugin(tmp_path, backend="slurm", bin_dir=str(slurm_bin))
    sid = await session(plugin)
    _, body = await get(plugin, f"list_jobs/{sid}")
    assert [j["job_id"] for j in body["jobs"]] == ["1190", "1201", "1202", "1203_3", "1203_[4-16]", "1220+0", "1220+1"]
    _, body = await get(plugin, f"list_jobs/{sid}/gpu")
    assert [j["job_id"] for j in body["jobs"]] == ["1202"]
    _, body = await get(plugin, f"list_jobs/{sid}/cpu", "user=alice&state=all")
    assert {j["state"] for j in body["jobs"]} == {"RUNNING", "PENDING", "COMPLETED", "FAILED"}
    _, body = await get(plugin, f"list_jobs/{sid}", "state=running")
    assert {j["job_id"] for j in body["jobs"]} == {"1201", "1202", "1203_3"}
    _, body = await get(plugin, f"list_jobs/{sid}", "state=FAILED")
    assert [j["job_id"] for j in body["jobs"]] == ["1151"]
    _, body = await get(plugin, f"list_jobs/{sid}", "user=*")
    assert len(body["jobs"]) == 7
    await plugin.stop()


async def test_unknown_queues_and_bad_arguments(tmp_path, slurm_bin):
    plugin = make_plugin(tmp_path, backend="slurm", bin_dir=str(slurm_bin))
    sid = await session(plugin)
    status, body = await get(plugin, f"list_jobs/{sid}/nosuch")
    assert status == 404 and body["error"] == "unknown_queue"
    assert body["detail"] == "no queue 'nosuch' on this edge; queues: cpu, debug, gpu, long"
    status, body = await get(plugin, f"list_jobs/{sid}/long", "user=alice")  # a queue, but no such jobs
    assert (status, body["jobs"]) == (200, [])
    for path, query in [(f"list_jobs/{sid}/-o%25", ""), (f"list_jobs/{sid}", "user=-a"),
                        (f"list_jobs/{sid}", "user=alice,bob"), (f"list_allocations/{sid}", "user=a b"),
                        (f"list_jobs/{sid}", "state=RUN;NING")]:
        status, body = await get(plugin, path, query)
        assert (status, body["error"]) == (400, "bad_request"), (path, query)
    status, _ = await get(plugin, "get_info/not-a-session")
    assert status == 404
    await plugin.stop()


async def test_list_allocations_defaults_to_the_agents_user(tmp_path, slurm_bin, calls):
    plugin = make_plugin(tmp_path, backend="slurm", bin_dir=str(slurm_bin))
    sid = await session(plugin)
    status, body = await get(plugin, f"list_allocations/{sid}")
    assert status == 200 and body["user"] == getpass.getuser()
    assert all(a["user"] == getpass.getuser() for a in body["allocations"])
    assert ["sacctmgr", "--json", "show", "assoc", "where", f"user={getpass.getuser()}"] in calls()
    _, body = await get(plugin, f"list_allocations/{sid}", "user=*")
    assert body["user"] == "*" and len(body["allocations"]) == 7
    _, body = await get(plugin, f"list_allocations/{sid}", "user=bob")
    assert [(a["account"], a["max_jobs"], a["partition"]) for a in body["allocations"]] == [("proj-ml", 4, "gpu")]
    await plugin.stop()


async def test_backend_route_says_what_is_used_and_why(tmp_path, slurm_bin):
    plugin = make_plugin(tmp_path, backend="slurm", bin_dir=str(slurm_bin), ttl_jobs="soon", colour="blue")
    sid = await session(plugin)
    status, body = await get(plugin, f"backend/{sid}")
    assert status == 200
    assert (body["backend"], body["detected_by"], body["version"]) == ("slurm", "config", "23.11.4")
    assert body["json"] == {"sinfo": True, "squeue": True, "scontrol": True, "sacctmgr": True}
    assert body["settings"]["ttl_jobs"] == 5.0
    assert "unknown setting queue_info.colour" in body["problems"]
    assert any(p.startswith("queue_info.ttl_jobs='soon' ignored") for p in body["problems"])
    await plugin.stop()


async def test_no_scheduler_answers_503_with_a_reason(tmp_path):
    plugin = make_plugin(tmp_path, backend="none")
    sid = await session(plugin)
    for route in ("get_info", "list_jobs", "list_allocations"):
        status, body = await get(plugin, f"{route}/{sid}")
        assert status == 503 and body["error"] == "no_scheduler", route
        assert "disabled by configuration" in body["detail"]
    status, body = await get(plugin, f"backend/{sid}")
    assert status == 200 and body["backend"] == "none"
    await plugin.stop()


async def test_failures_and_timeouts_reach_the_caller(tmp_path, slurm_bin, monkeypatch):
    monkeypatch.setenv("FAKE_SLURM_FAIL", "squeue")
    # 3 s: long enough for the fake commands on a loaded machine (0.5 s was not: a failing
    # squeue timed out instead), short enough for the sleeping one to time out quickly.
    plugin = make_plugin(tmp_path, backend="slurm", bin_dir=str(slurm_bin), command_timeout=3)
    sid = await session(plugin)
    status, body = await get(plugin, f"list_jobs/{sid}")
    assert status == 502 and body["error"] == "scheduler_error" and body["returncode"] == 1
    assert body["command"].startswith("squeue --json") and "Unable to contact" in body["stderr"]
    monkeypatch.delenv("FAKE_SLURM_FAIL")
    monkeypatch.setenv("FAKE_SLURM_SLEEP", "60")
    status, body = await get(plugin, f"get_info/{sid}")
    assert status == 504 and body["error"] == "scheduler_timeout" and body["command"] == "sinfo --json"
    monkeypatch.delenv("FAKE_SLURM_SLEEP")
    status, _ = await get(plugin, f"get_info/{sid}")  # failures are not cached
    assert status == 200
    await plugin.stop()


async def test_pbs_through_the_plugin(tmp_path, pbs_bin):
    plugin = make_plugin(tmp_path, backend="pbs", bin_dir=str(pbs_bin))
    sid = await session(plugin)
    _, info = await get(plugin, f"get_info/{sid}")
    assert info["queues"]["gpu"]["nodes_available"] == 2 and info["meta"]["backend"] == "pbs"
    _, jobs = await get(plugin, f"list_jobs/{sid}/gpu")
    assert [(j["job_id"], j["state"]) for j in jobs["jobs"]] == [("1002", "PENDING"), ("1006", "RUNNING")]
    _, allocations = await get(plugin, f"list_allocations/{sid}", "user=*")
    assert allocations["allocations"] == [] and allocations["meta"]["notes"]
    await plugin.stop()


def test_settings():
    settings, problems = Settings.from_config({"json": "false", "backend": "PBS", "ttl_info": 120, "ttl_jobs": -1,
                                               "command_timeout": "0", "slurm_conf": "/etc/slurm/b.conf"})
    assert (settings.use_json, settings.backend, settings.ttl_info, settings.slurm_conf) == (
        False, "pbs", 120.0, "/etc/slurm/b.conf")
    assert settings.ttl_jobs == 5.0 and settings.command_timeout == 30.0 and len(problems) == 2
    assert Settings.from_config({"json": True})[0].use_json is True
    assert Settings.from_config({"backend": "lsf"})[1] == ["queue_info.backend='lsf' is not one of auto, slurm, "
                                                           "pbs, none"]


def test_manifest_routes_are_read_only_and_the_ui_schema_is_complete(tmp_path):
    plugin = make_plugin(tmp_path, backend="none")
    manifest = plugin.manifest()
    routes = {(r["method"], r["path"]): r["readonly"] for r in manifest["routes"]}
    for path in ("get_info/{sid}", "list_jobs/{sid}", "list_jobs/{sid}/{queue}", "list_allocations/{sid}",
                 "backend/{sid}"):
        assert routes[("GET", path)] is True
    schema = manifest["ui_schema"]
    assert {m["id"] for m in schema["monitors"]} == {"queues", "jobs", "allocations", "backend"}
    for monitor in schema["monitors"]:
        assert ("GET", monitor["endpoint"]) in routes
        if monitor["type"] == "table":
            assert monitor["columns"] and monitor["data_path"]
    for form in schema["forms"]:
        assert form["layout"] in ("single", "grid2", "grid3") and form["submit"]["endpoint"]
