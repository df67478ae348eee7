"""psij plugin against a real Slurm (``SLURM_WITH_DBD=1 bash ../shared/scripts/slurm-up.sh``).

The executor polls squeue every second (``poll_interval=1``). Other engineers use the same
Slurm at the same time: jobs may wait in the queue for a while, so waits are generous,
and nothing asserts how long a step took. Tests only ever cancel their own job ids.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest

from tests.fixtures.psij.harness import (
    ALICE,
    BOB,
    OWNER,
    SLURM_WAIT,
    slurm_enforces_accounts,
    slurm_fixtures,
    squeue_field,
    unique,
)

pytestmark = [pytest.mark.slurm, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

WAIT = SLURM_WAIT
_slurm, psij = slurm_fixtures()


def sh(script: str, **spec) -> dict:
    return {"executable": "/bin/sh", "arguments": ["-c", script], **spec}


def gated(gate, before: str, after: str) -> str:
    return f'{before}; while [ ! -e "{gate}" ]; do sleep 0.2; done; {after}'


async def wait_slurm(native_id: str, states: tuple[str, ...], timeout: float = WAIT) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = await asyncio.to_thread(squeue_field, native_id, "%T")
        if state in states:
            return state
        await asyncio.sleep(0.3)
    raise AssertionError(f"slurm job {native_id} not in {states}: {state!r}")


async def test_slurm_job_queued_active_completed_with_events_and_output(psij, tmp_path):
    gate = tmp_path / "gate"
    name = unique("psij-ok")
    job = await psij.submit(sh(gated(gate, "echo start $SLURM_JOB_ID $MYVAR", "echo end"), name=name,
                               environment={"MYVAR": "hello"},
                               attributes={"queue_name": "debug", "account": "proj1", "duration": 120}),
                            executor="slurm")
    native = job["native_id"]
    assert native.isdigit() and job["state"] == "QUEUED"
    # What Slurm got: the name (psij drops JobSpec.name, gotcha 1), partition, account, time limit.
    assert await asyncio.to_thread(squeue_field, native, "%j|%P|%a|%l") == f"{name}|debug|proj1|2:00"
    await psij.wait_state(job["job_id"], ("ACTIVE",), timeout=WAIT)
    gate.touch()
    final = await psij.wait_state(job["job_id"], timeout=WAIT)
    assert final["state"] == "COMPLETED" and final["exit_code"] == 0
    _, status = await psij.status(job["job_id"])
    assert status["stdout"] == f"start {native} hello\nend\n"
    assert await psij.wait_events(job["job_id"]) == ["QUEUED", "ACTIVE", "COMPLETED"]
    events = psij.events(job["job_id"])
    assert all(e["native_id"] == native and e["executor"] == "slurm" for e in events)
    assert events[-1]["stdout"] == status["stdout"]
    # psij's leftovers in the work dir are cleaned up (gotcha 6).
    work = psij.state_dir / "psij" / "work" / "slurm"
    assert not (work / f"{native}.out").exists() and not (work / f"{native}.ec").exists()
    assert not list(work.glob("*.job"))


async def test_slurm_cancel_makes_the_job_canceled(psij):
    job = await psij.submit({"executable": "/bin/sleep", "arguments": ["600"], "name": unique("psij-cancel")},
                            executor="slurm")
    await psij.wait_state(job["job_id"], ("ACTIVE",), timeout=WAIT)
    code, answer = await psij.cancel(job["job_id"])
    assert code == 200 and answer["cancel_requested"] is True
    final = await psij.wait_state(job["job_id"], ("CANCELED",), timeout=WAIT)
    assert final["exit_code"] is None
    assert await psij.wait_events(job["job_id"]) == ["QUEUED", "ACTIVE", "CANCELED"]
    assert await wait_slurm(job["native_id"], ("CANCELLED",)) == "CANCELLED"


async def test_slurm_cancel_while_still_queued(psij):
    # A begin time an hour away keeps the job pending whatever else runs on the cluster.
    job = await psij.submit({"executable": "/bin/true", "name": unique("psij-held"),
                             "custom_attributes": {"slurm.begin": "now+1hour"}}, executor="slurm")
    await wait_slurm(job["native_id"], ("PENDING",))
    code, _ = await psij.cancel(job["job_id"])
    assert code == 200
    await psij.wait_state(job["job_id"], ("CANCELED",), timeout=WAIT)
    assert await psij.wait_events(job["job_id"]) == ["QUEUED", "CANCELED"]


async def test_slurm_nonzero_exit_is_failed(psij):
    job = await psij.submit(sh("echo failing >&2; exit 3", name=unique("psij-fail")), executor="slurm")
    final = await psij.wait_state(job["job_id"], timeout=WAIT)
    assert final["state"] == "FAILED" and final["exit_code"] == 3
    states = await psij.wait_events(job["job_id"])
    assert states[0] == "QUEUED" and states[-1] == "FAILED"
    assert psij.events(job["job_id"])[-1]["stderr"] == "failing\n"
    # Slurm itself calls it COMPLETED (gotcha 2); the plugin reports psij's reading.
    assert (await psij.list_jobs(state="FAILED"))["jobs"][0]["job_id"] == job["job_id"]


async def test_bad_partition_is_refused_with_sbatchs_message_and_nothing_is_left(psij):
    code, answer = await psij.submit_raw({"job_spec": {"executable": "/bin/true", "attributes": {
        "queue_name": "nosuchpartition"}}, "executor": "slurm"}, key="bad-then-good")
    assert code == 422 and answer["error"] == "submit_rejected"
    assert "sbatch: error" in answer["detail"] and "invalid partition" in answer["detail"].lower()
    assert (await psij.list_jobs())["total"] == 0
    assert not any(p.is_file() for p in (psij.state_dir / "psij" / "output").rglob("*"))
    assert not list((psij.state_dir / "psij" / "work" / "slurm").glob("*.job"))
    # The failed submit did not burn its idempotency key.
    good = await psij.submit({"executable": "/bin/true", "name": unique("psij-after-bad")}, executor="slurm",
                             key="bad-then-good")
    assert good["replayed"] is False
    await psij.wait_state(good["job_id"], timeout=WAIT)


async def test_bad_constraint_is_refused_with_sbatchs_message(psij):
    code, answer = await psij.submit_raw({"job_spec": {"executable": "/bin/true", "attributes": {
        "slurm.constraint": "nosuchfeature"}}, "executor": "slurm"})
    assert code == 422 and "Invalid feature specification" in answer["detail"]


@pytest.mark.slurmdbd
async def test_bad_account_is_refused_with_sbatchs_message(psij):
    ok, reason = slurm_enforces_accounts()
    if not ok:
        pytest.skip(reason)
    code, answer = await psij.submit_raw({"job_spec": {"executable": "/bin/true", "attributes": {
        "account": "nosuchaccount"}}, "executor": "slurm"})
    assert code == 422 and answer["error"] == "submit_rejected"
    assert "Invalid account" in answer["detail"] and "sbatch: error" in answer["detail"]
    assert (await psij.list_jobs())["total"] == 0


@pytest.mark.slurm_alone  # A and B must run at the same time: both CPUs
async def test_running_slurm_job_is_reattached_after_a_restart(psij, tmp_path):
    gate_a, gate_b = tmp_path / "gate-a", tmp_path / "gate-b"
    # A keeps running across the restart; B ends while the agent is down.
    a = await psij.submit(sh(gated(gate_a, "echo a-start", "echo a-end; exit 4"), name=unique("psij-reattach-a")),
                          executor="slurm")
    b = await psij.submit(sh(gated(gate_b, "echo b-start", "exit 5"), name=unique("psij-reattach-b")),
                          executor="slurm")
    for job in (a, b):
        await psij.wait_state(job["job_id"], ("ACTIVE",), timeout=WAIT)
    await psij.stop()
    gate_b.touch()
    await wait_slurm(b["native_id"], ("COMPLETED", "FAILED"))  # FAILED since the script exits with the job's code
    await psij.start()
    _, status = await psij.status(a["job_id"], output="false")
    assert status["state"] == "ACTIVE" and status["native_id"] == a["native_id"]
    b_final = await psij.wait_state(b["job_id"], timeout=WAIT)
    # psij wrote <native_id>.ec, so the exit code survives the restart (gotcha 5).
    assert (b_final["state"], b_final["exit_code"]) == ("FAILED", 5)
    gate_a.touch()
    a_final = await psij.wait_state(a["job_id"], timeout=WAIT)
    assert (a_final["state"], a_final["exit_code"]) == ("FAILED", 4)
    _, a_status = await psij.status(a["job_id"])
    assert a_status["stdout"] == "a-start\na-end\n"
    # The new agent reports what happened after it started, and only that.
    assert await psij.wait_events(a["job_id"]) == ["FAILED"]
    assert await psij.wait_events(b["job_id"]) == ["FAILED"]
    # Cancelling works on re-attached jobs too.
    c = await psij.submit({"executable": "/bin/sleep", "arguments": ["600"], "name": unique("psij-reattach-c")},
                          executor="slurm")
    await psij.wait_state(c["job_id"], ("ACTIVE",), timeout=WAIT)
    await psij.restart()
    code, _ = await psij.cancel(c["job_id"])
    assert code == 200
    await psij.wait_state(c["job_id"], ("CANCELED",), timeout=WAIT)


async def test_idempotent_retry_makes_one_slurm_job_even_across_a_restart(psij):
    name = unique("psij-idem")
    spec = {"executable": "/bin/sleep", "arguments": ["600"], "name": name}
    first = await psij.submit(spec, executor="slurm", key=name)
    second = await psij.submit(spec, executor="slurm", key=name)
    assert second["job_id"] == first["job_id"] and second["replayed"] is True
    await psij.restart()
    third = await psij.submit(spec, executor="slurm", key=name)
    assert third["job_id"] == first["job_id"] and third["native_id"] == first["native_id"]
    ids = await asyncio.to_thread(subprocess.run, ["squeue", "-h", "-t", "all", "-n", name, "-o", "%i"],
                                  capture_output=True, text=True, timeout=30)
    assert ids.stdout.split() == [first["native_id"]]


async def test_another_user_can_neither_see_nor_cancel_a_slurm_job(psij):
    job = await psij.submit({"executable": "/bin/sleep", "arguments": ["600"], "name": unique("psij-mine")},
                            executor="slurm", caller=ALICE)
    await psij.wait_state(job["job_id"], ("ACTIVE",), timeout=WAIT)
    code, answer = await psij.cancel(job["job_id"], caller=BOB)
    assert code == 404 and answer["error"] == "unknown_job"
    code, _ = await psij.status(job["job_id"], caller=BOB)
    assert code == 404
    assert (await psij.list_jobs(caller=BOB))["jobs"] == []
    await asyncio.sleep(1.5)  # more than one poll: a wrongly accepted cancel would show by now
    assert await asyncio.to_thread(squeue_field, job["native_id"], "%T") == "RUNNING"
    assert [j["job_id"] for j in (await psij.list_jobs(caller=OWNER))["jobs"]] == [job["job_id"]]
    code, _ = await psij.cancel(job["job_id"], caller=ALICE)
    assert code == 200
    await psij.wait_state(job["job_id"], ("CANCELED",), timeout=WAIT)


async def test_tail_slurm_output_by_offset(psij, tmp_path):
    gate = tmp_path / "gate"
    job = await psij.submit(sh(gated(gate, "echo line1; echo err1 >&2", "echo line2; echo line3"),
                               name=unique("psij-tail")), executor="slurm")
    offsets = {"stdout": 0, "stderr": 0}
    seen = {"stdout": "", "stderr": ""}

    async def read_more() -> dict:
        _, status = await psij.status(job["job_id"], stdout_offset=offsets["stdout"], stderr_offset=offsets["stderr"])
        for stream in offsets:
            offsets[stream] = status[f"{stream}_offset"]
            seen[stream] += status[stream]
        return status

    deadline = time.monotonic() + WAIT
    status = await read_more()
    while seen["stdout"] != "line1\n" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        status = await read_more()
    assert seen["stdout"] == "line1\n" and status["state"] in ("QUEUED", "ACTIVE")
    gate.touch()
    await psij.wait_state(job["job_id"], timeout=WAIT)
    await read_more()
    assert seen == {"stdout": "line1\nline2\nline3\n", "stderr": "err1\n"}


async def test_a_scheduler_outage_of_several_polls_does_not_fail_jobs(psij, tmp_path, monkeypatch):
    # psij 0.9.11 marks every followed job FAILED after three failed polls in a row (and then
    # stops polling); the plugin tolerates poll_error_tolerance seconds (600 by default). The
    # outage is a failing squeue first on this test process's PATH: the shared slurmctld stays up.
    gate = tmp_path / "gate"
    job = await psij.submit(sh(gated(gate, "echo up", "echo down"), name=unique("psij-outage")), executor="slurm")
    await psij.wait_state(job["job_id"], ("ACTIVE",), timeout=WAIT)
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "squeue-calls"
    (fake / "squeue").write_text(f'#!/bin/sh\necho x >> "{calls}"\n'
                                 'echo "slurm_load_jobs error: Unable to contact slurm controller" >&2\nexit 1\n')
    (fake / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    deadline = time.monotonic() + 60
    while (not calls.exists() or len(calls.read_text().split()) < 5) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert len(calls.read_text().split()) >= 5  # more failed polls than psij alone survives
    _, status = await psij.status(job["job_id"], output="false")
    assert status["state"] == "ACTIVE"
    monkeypatch.undo()
    gate.touch()
    final = await psij.wait_state(job["job_id"], timeout=WAIT)
    assert (final["state"], final["exit_code"]) == ("COMPLETED", 0)
