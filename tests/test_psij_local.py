"""psij plugin with psij's real ``local`` executor, driven through ``plugin.handle``.

Each test runs a real PluginHost (as the agent does) on its own state dir; jobs are real
processes. Waits poll the plugin's status route; no test asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time

import psutil
import pytest

from edge_agent.plugin import Request
from edge_agent.plugins.psij.store import JobRecord, JobStore, owner_key
from tests.fixtures.psij.harness import ALICE, BOB, OWNER, PsijHarness

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def psij(tmp_path):
    harness = await PsijHarness(tmp_path / "state").start()
    yield harness
    await harness.cleanup()


def sh(script: str, **spec) -> dict:
    return {"executable": "/bin/sh", "arguments": ["-c", script], **spec}


async def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- the basic life of a job -------------------------------------------------------------


async def test_local_job_completes_with_output_exit_code_and_an_event_per_state(psij, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    job = await psij.submit(sh("echo hello $GREETING from $(pwd); echo oops >&2",
                               environment={"GREETING": "psij"}, directory=str(workdir)))
    assert set(job) >= {"job_id", "native_id", "state"} and job["native_id"].isdigit()
    assert job["replayed"] is False
    final = await psij.wait_state(job["job_id"])
    assert final["state"] == "COMPLETED" and final["exit_code"] == 0
    code, status = await psij.status(job["job_id"])
    assert code == 200
    assert status["stdout"] == f"hello psij from {workdir}\n"
    assert status["stderr"] == "oops\n"
    assert status["stdout_offset"] == len(status["stdout"].encode())
    assert status["native_id"] == job["native_id"] and status["executor"] == "local"
    assert {"message", "time", "history", "created"} <= set(status)
    assert [h["state"] for h in status["history"]] == ["QUEUED", "ACTIVE", "COMPLETED"]

    assert await psij.wait_events(job["job_id"]) == ["QUEUED", "ACTIVE", "COMPLETED"]
    events = psij.events(job["job_id"])
    assert all(e["native_id"] == job["native_id"] and e["executor"] == "local" for e in events)
    assert [e["previous_state"] for e in events] == ["NEW", "QUEUED", "ACTIVE"]
    assert events[-1]["exit_code"] == 0 and events[-1]["stdout"].startswith("hello psij")
    # Events are addressed to the job's owner, so the bridge shows them to nobody else.
    assert {f["owner"] for f in psij.event_frames(job["job_id"])} == {ALICE.uid}


async def test_nonzero_exit_is_failed_with_its_exit_code(psij):
    job = await psij.submit(sh("echo bad >&2; exit 3"))
    final = await psij.wait_state(job["job_id"])
    assert final["state"] == "FAILED" and final["exit_code"] == 3
    assert await psij.wait_events(job["job_id"]) == ["QUEUED", "ACTIVE", "FAILED"]
    assert psij.events(job["job_id"])[-1]["exit_code"] == 3
    assert psij.events(job["job_id"])[-1]["stderr"] == "bad\n"


async def test_cancel_a_running_job(psij):
    job = await psij.submit({"executable": "/bin/sleep", "arguments": ["300"]})
    await psij.wait_state(job["job_id"], ("ACTIVE",))
    code, answer = await psij.cancel(job["job_id"])
    assert code == 200 and answer["status"] == "canceled" and answer["cancel_requested"] is True
    final = await psij.wait_state(job["job_id"], ("CANCELED",))
    assert final["exit_code"] is None
    assert await psij.wait_events(job["job_id"]) == ["QUEUED", "ACTIVE", "CANCELED"]
    await wait_until(lambda: not _alive(int(job["native_id"])), what="the job's process to end")
    # Cancelling again is harmless; cancelling a job that ended otherwise is a conflict.
    code, again = await psij.cancel(job["job_id"])
    assert code == 200 and again["state"] == "CANCELED"
    done = await psij.submit({"executable": "/bin/true"})
    await psij.wait_state(done["job_id"])
    code, err = await psij.cancel(done["job_id"])
    assert code == 409 and err["error"] == "job_finished"


async def test_many_jobs_at_once_every_transition_reaches_the_event_queue(psij):
    # Callbacks fire on the submitting thread and on psij's reaper thread at once.
    jobs = await asyncio.gather(*(psij.submit({"executable": "/bin/true"}) for _ in range(20)))
    for job in jobs:
        await psij.wait_state(job["job_id"])
    for job in jobs:
        assert await psij.wait_events(job["job_id"]) == ["QUEUED", "ACTIVE", "COMPLETED"]
    seqs = [e["seq"] for e in psij.host.events]
    assert seqs == sorted(seqs) and psij.host.events_dropped == 0


# -- bad requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("body, error, words", [
    ({"job_spec": {"executable": "/no/such/program"}}, "invalid_job_spec", "does not exist"),
    ({"job_spec": {"executable": "no-such-program-xyz"}}, "invalid_job_spec", "not on PATH"),
    ({"job_spec": {"executable": "/etc/passwd"}}, "invalid_job_spec", "not an executable"),
    ({"job_spec": {"executable": "/etc"}}, "invalid_job_spec", "not an executable"),
    ({"job_spec": {"executable": "/bin/true", "directory": "/no/such/dir"}}, "invalid_job_spec", "does not exist"),
    ({"job_spec": {}}, "invalid_job_spec", "executable"),
    ({"job_spec": {"executable": "/bin/true", "arguments": "a b"}}, "invalid_job_spec", "list"),
    ({"job_spec": {"executable": "/bin/true", "attributes": {"duration": -1}}}, "invalid_job_spec", "positive"),
    ({"job_spec": {"executable": "/bin/true", "launcher": "warp"}}, "invalid_job_spec", "launcher"),
    ({"job_spec": {"executable": "/bin/true"}, "executor": "nosuch"}, "unknown_executor", "nosuch"),
    ({"job_spec": {"executable": "/bin/true"}, "executor": "flux"}, "executor_unavailable", "flux"),
    ({"job_spec": {"executable": "/bin/true"}, "executor": "pbs"}, "executor_unavailable", "qsub"),
    ("not json at all", "bad_json", "JSON"),
])
async def test_bad_submits_are_4xx_and_leave_nothing_behind(psij, body, error, words):
    if body == "not json at all":
        code, answer = await _raw_submit(psij, b"{not json")
    else:
        code, answer = await psij.submit_raw(body)
    assert code in (400, 422), answer
    assert answer["error"] == error and words in answer["detail"], answer
    assert (await psij.list_jobs())["jobs"] == []
    output = psij.state_dir / "psij" / "output"
    assert not any(p.is_file() for p in output.rglob("*")), list(output.rglob("*"))


async def _raw_submit(psij, raw: bytes):
    response = await psij.plugin.handle(Request("POST", f"submit/{await psij.sid()}", body=raw, caller=ALICE))
    return response.status, json.loads(response.body)


async def test_executors_not_offered_on_this_edge_are_refused(tmp_path):
    harness = await PsijHarness(tmp_path / "s", {"executors": "slurm"}).start()
    try:
        code, answer = await harness.submit_raw({"job_spec": {"executable": "/bin/true"}, "executor": "local"})
        assert code == 400 and answer["error"] == "executor_not_offered" and "slurm" in answer["detail"]
        _, listing = await harness.call("GET", "executors")
        local = next(e for e in listing["executors"] if e["name"] == "local")
        assert local["loads"] is True and local["enabled"] is False
    finally:
        await harness.cleanup()


async def test_executors_route_says_what_loads_here(psij):
    code, answer = await psij.call("GET", "executors")
    assert code == 200 and answer["default"] == "local" and answer["psij"]["available"] is True
    by_name = {e["name"]: e for e in answer["executors"]}
    assert by_name["local"]["loads"] and by_name["local"]["ready"]
    assert by_name["flux"]["loads"] is False and "flux" in by_name["flux"]["error"]
    assert by_name["pbs"]["loads"] is True and by_name["pbs"]["submit_command"] == "qsub"
    code, health = await psij.call("GET", "health")
    assert health["status"] == "ok" and health["psij"]["available"] is True


# -- who sees what ---------------------------------------------------------------------------


async def test_jobs_belong_to_their_submitter(psij):
    job = await psij.submit({"executable": "/bin/sleep", "arguments": ["300"]}, caller=ALICE)
    await psij.wait_state(job["job_id"], ("ACTIVE",))
    other = await psij.submit({"executable": "/bin/true"}, caller=BOB)

    for code, answer in (await psij.status(job["job_id"], caller=BOB), await psij.cancel(job["job_id"], caller=BOB)):
        assert code == 404 and answer["error"] == "unknown_job"
    assert [j["job_id"] for j in (await psij.list_jobs(caller=BOB))["jobs"]] == [other["job_id"]]
    assert [j["job_id"] for j in (await psij.list_jobs(caller=ALICE))["jobs"]] == [job["job_id"]]
    code, still = await psij.status(job["job_id"], caller=ALICE, output="false")
    assert still["state"] == "ACTIVE"  # bob's cancel did nothing
    # The edge owner sees and may cancel everything.
    owner_view = await psij.list_jobs(caller=OWNER)
    assert {j["job_id"] for j in owner_view["jobs"]} == {job["job_id"], other["job_id"]}
    assert owner_view["total"] == 2
    code, _ = await psij.cancel(job["job_id"], caller=OWNER)
    assert code == 200
    await psij.wait_state(job["job_id"], ("CANCELED",))
    code, answer = await psij.status("no-such-job")
    assert code == 404


async def test_output_lives_in_a_private_per_user_directory(psij):
    job = await psij.submit({"executable": "/bin/echo", "arguments": ["secret"]}, caller=ALICE)
    await psij.wait_state(job["job_id"])
    _, status = await psij.status(job["job_id"])
    root = psij.state_dir / "psij"
    user_dir = root / "output" / owner_key(ALICE.uid)
    job_dir = user_dir / job["job_id"]
    assert status["stdout_path"] == str(job_dir / "stdout")
    for path in (root, root / "output", user_dir, job_dir, root / "work"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE((root / "jobs.sqlite3").stat().st_mode) == 0o600
    # psij's work directory (launcher scripts) is the agent's, not ~/.psij or /tmp.
    assert psij.plugin.manager.backend.work_dir == root / "work"
    assert any(p.name == "single_launch.sh" for p in (root / "work").rglob("*"))


# -- tailing ---------------------------------------------------------------------------------


async def test_tail_output_by_offset_while_the_job_runs(psij, tmp_path):
    gate = tmp_path / "gate"
    job = await psij.submit(sh(f'echo one; echo err1 >&2; while [ ! -e "{gate}" ]; do sleep 0.05; done; '
                               'echo two; echo three; echo err2 >&2'))
    seen = {"stdout": "", "stderr": ""}
    offsets = {"stdout": 0, "stderr": 0}

    async def read_more():
        code, status = await psij.status(job["job_id"], stdout_offset=offsets["stdout"],
                                         stderr_offset=offsets["stderr"])
        assert code == 200
        for stream in offsets:
            assert status[f"{stream}_offset"] >= offsets[stream]
            offsets[stream] = status[f"{stream}_offset"]
            seen[stream] += status[stream]
        return status

    deadline = time.monotonic() + 30
    while seen["stdout"] != "one\n" and time.monotonic() < deadline:
        status = await read_more()
        await asyncio.sleep(0.05)
    assert seen["stdout"] == "one\n" and status["state"] == "ACTIVE"
    again = await read_more()
    assert again["stdout"] == ""  # nothing new since the last offset
    gate.touch()
    await psij.wait_state(job["job_id"])
    await read_more()
    assert seen == {"stdout": "one\ntwo\nthree\n", "stderr": "err1\nerr2\n"}


async def test_max_bytes_limits_a_chunk_and_says_more_is_there(psij):
    job = await psij.submit(sh("printf 'abcdefghij'"))
    await psij.wait_state(job["job_id"])
    _, first = await psij.status(job["job_id"], max_bytes=4)
    assert (first["stdout"], first["stdout_offset"], first["stdout_truncated"], first["stdout_size"]) == (
        "abcd", 4, True, 10)
    _, rest = await psij.status(job["job_id"], stdout_offset=4)
    assert rest["stdout"] == "efghij" and rest["stdout_truncated"] is False
    _, bare = await psij.status(job["job_id"], output="false")
    assert "stdout" not in bare and bare["state"] == "COMPLETED"
    code, err = await psij.status(job["job_id"], stdout_offset=-1)
    assert code == 400
    code, err = await psij.status(job["job_id"], stdout_offset="x")
    assert code == 400 and "stdout_offset" in err["detail"]


# -- idempotency --------------------------------------------------------------------------


async def test_retried_submit_with_the_same_key_returns_the_same_job(psij):
    spec = {"executable": "/bin/echo", "arguments": ["once"]}
    first = await psij.submit(spec, key="retry-1")
    second = await psij.submit(spec, key="retry-1")
    assert second["job_id"] == first["job_id"] and second["native_id"] == first["native_id"]
    assert second["replayed"] is True
    # The key may also travel in the body.
    code, third = await psij.submit_raw({"job_spec": spec, "idempotency_key": "retry-1"})
    assert code == 200 and third["job_id"] == first["job_id"]
    # Reusing a key for a different job is an error, not a silent replay.
    code, err = await psij.submit_raw({"job_spec": {"executable": "/bin/echo", "arguments": ["other"]}},
                                      key="retry-1")
    assert code == 422 and err["error"] == "idempotency_key_reused"
    # Keys are per user: bob's "retry-1" is his own job.
    bobs = await psij.submit(spec, key="retry-1", caller=BOB)
    assert bobs["job_id"] != first["job_id"] and bobs["replayed"] is False
    assert (await psij.list_jobs())["total"] == 1


async def test_concurrent_retries_with_one_key_create_one_job(psij):
    spec = {"executable": "/bin/sleep", "arguments": ["0.2"]}
    answers = await asyncio.gather(*(psij.submit(spec, key="storm") for _ in range(8)))
    assert len({a["job_id"] for a in answers}) == 1
    assert sum(not a["replayed"] for a in answers) == 1
    assert (await psij.list_jobs())["total"] == 1


async def test_idempotency_key_survives_an_agent_restart(psij):
    spec = {"executable": "/bin/echo", "arguments": ["durable"]}
    first = await psij.submit(spec, key="restart-key")
    await psij.wait_state(first["job_id"])
    await psij.restart()
    again = await psij.submit(spec, key="restart-key")
    assert again["job_id"] == first["job_id"] and again["replayed"] is True
    assert (await psij.list_jobs())["total"] == 1


# -- restarts ---------------------------------------------------------------------------------


async def test_records_and_output_survive_a_restart(psij):
    job = await psij.submit({"executable": "/bin/echo", "arguments": ["persisted"]})
    await psij.wait_state(job["job_id"])
    await psij.restart()
    code, status = await psij.status(job["job_id"])
    assert code == 200 and status["state"] == "COMPLETED" and status["stdout"] == "persisted\n"
    assert [h["state"] for h in status["history"]] == ["QUEUED", "ACTIVE", "COMPLETED"]
    assert psij.events(job["job_id"]) == []  # nothing happened again


async def test_running_local_job_is_reattached_after_restart_with_its_real_exit_code(psij, tmp_path):
    gate = tmp_path / "gate"
    job = await psij.submit(sh(f'while [ ! -e "{gate}" ]; do sleep 0.05; done; echo done; exit 7'))
    await psij.wait_state(job["job_id"], ("ACTIVE",))
    await psij.restart()
    _code, status = await psij.status(job["job_id"], output="false")
    assert status["state"] == "ACTIVE"
    gate.touch()
    final = await psij.wait_state(job["job_id"])
    # psij reports exit 0 for every attached process; the plugin's exit-code file knows better.
    assert final["state"] == "FAILED" and final["exit_code"] == 7
    assert await psij.wait_events(job["job_id"]) == ["FAILED"]  # the new agent's only transition
    _, status = await psij.status(job["job_id"])
    assert status["stdout"] == "done\n"


async def test_job_that_ended_while_the_agent_was_down_gets_its_outcome_on_start(psij, tmp_path):
    gate = tmp_path / "gate"
    ok = await psij.submit(sh(f'while [ ! -e "{gate}" ]; do sleep 0.05; done; exit 0'))
    bad = await psij.submit(sh(f'while [ ! -e "{gate}" ]; do sleep 0.05; done; exit 4'))
    for job in (ok, bad):
        await psij.wait_state(job["job_id"], ("ACTIVE",))
    await psij.stop()
    gate.touch()
    for job in (ok, bad):
        await wait_until(lambda pid=int(job["native_id"]): not _alive(pid), what="the jobs to end")
    await psij.start()
    ok_status = await psij.wait_state(ok["job_id"])
    bad_status = await psij.wait_state(bad["job_id"])
    assert (ok_status["state"], ok_status["exit_code"]) == ("COMPLETED", 0)
    assert (bad_status["state"], bad_status["exit_code"]) == ("FAILED", 4)
    assert ok_status["message"] is None and bad_status["message"] is None
    assert [e["state"] for e in psij.events(bad["job_id"])] == ["FAILED"]


async def test_a_local_job_killed_while_the_agent_was_down_is_failed_without_an_exit_code(psij):
    job = await psij.submit({"executable": "/bin/sleep", "arguments": ["300"]})
    await psij.wait_state(job["job_id"], ("ACTIVE",))
    await psij.stop()
    launcher = psutil.Process(int(job["native_id"]))
    # The job's command dies; the launcher then records its exit code.
    await wait_until(lambda: _kill_child(launcher, "/bin/sleep"), what="the job's command to start")
    await wait_until(lambda: not _alive(launcher.pid), what="the launcher to end")
    await psij.start()
    final = await psij.wait_state(job["job_id"])
    assert (final["state"], final["exit_code"]) == ("FAILED", 137)  # 128 + SIGKILL, from the launcher
    # Killing the launcher itself leaves no exit code at all: FAILED, and it says so.
    other = await psij.submit({"executable": "/bin/sleep", "arguments": ["300"]})
    await psij.wait_state(other["job_id"], ("ACTIVE",))
    await psij.stop()
    tree = psutil.Process(int(other["native_id"]))
    command: list[psutil.Process] = []
    await wait_until(lambda: command.extend(_children(tree, "/bin/sleep")) or command, what="the command to start")
    tree.kill()  # the launcher first, so that it cannot record anything
    command[0].kill()
    await wait_until(lambda: not _alive(tree.pid), what="the launcher to end")
    await psij.start()
    final = await psij.wait_state(other["job_id"])
    assert final["state"] == "FAILED" and final["exit_code"] is None
    assert "without recording an exit code" in final["message"]


async def test_a_submit_cut_short_by_a_crash_is_marked_failed_on_start(tmp_path):
    state = tmp_path / "state"
    (state / "psij").mkdir(parents=True)
    store = JobStore(state / "psij" / "jobs.sqlite3")
    store.insert(JobRecord(job_id="crashed-1", owner_key=owner_key(ALICE.uid), owner_uid=ALICE.uid,
                           owner_user="alice", executor="slurm", state="NEW", spec={"executable": "/bin/true"},
                           job_dir=str(state / "psij" / "output" / "x"), fingerprint="f", idempotency_key="k"))
    store.close()
    harness = await PsijHarness(state).start()
    try:
        _code, status = await harness.status("crashed-1")
        assert status["state"] == "FAILED" and "may not have reached the scheduler" in status["message"]
        assert [e["state"] for e in harness.events("crashed-1")] == ["FAILED"]
    finally:
        await harness.cleanup()


async def test_a_bad_setting_disables_the_plugin_with_a_clear_log(tmp_path, caplog):
    harness = await PsijHarness(tmp_path / "s", {"poll_interval": "soon"}).start()
    try:
        assert "psij" not in harness.host.plugins
        assert "psij.poll_interval must be a number" in caplog.text
    finally:
        await harness.stop()


async def test_store_schema_is_versioned(psij):
    db = sqlite3.connect(psij.state_dir / "psij" / "jobs.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2  # 2: array tasks
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "templates", "reports", "array_tasks"} <= tables
    db.close()


def _children(parent: psutil.Process, executable: str) -> list[psutil.Process]:
    """``parent``'s descendants running ``executable``."""
    found = []
    for process in parent.children(recursive=True):
        try:
            if process.cmdline()[:1] == [executable]:
                found.append(process)
        except (psutil.Error, OSError):
            continue  # short-lived helpers of the launcher come and go
    return found


def _kill_child(parent: psutil.Process, executable: str) -> bool:
    """Kill ``parent``'s descendant running ``executable``; False while there is none yet."""
    for process in _children(parent, executable):
        process.kill()
        return True
    return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_plugin_module_never_imports_psij_at_import_time():
    code = ("import sys, edge_agent.plugins.psij.plugin, edge_agent.plugins.psij.client; "
            "print('psij' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_only_submit_cancel_preview_and_template_writes_need_the_user_role(tmp_path):
    from edge_agent.host import PluginHost
    from edge_agent.plugins.psij.plugin import PsijPlugin

    routes = PluginHost([PsijPlugin], state_dir=tmp_path).manifest()[0]["routes"]
    writes = {r["path"] for r in routes if not r["readonly"]}
    # preview probes paths on the host (issue 20): not for viewers either; job templates
    # (issue 19) are saved, submitted and deleted by users, and so are an array's retries.
    assert writes == {"submit/{sid}", "cancel/{sid}/{job_id}", "preview/{sid}", "templates/{sid}",
                      "templates/{sid}/{template_id}/submit", "templates/{sid}/{template_id}/delete",
                      "retry/{sid}/{job_id}"}
    assert {"executors", "status/{sid}/{job_id}", "list_jobs/{sid}", "preview/{sid}"} <= {r["path"] for r in routes}
