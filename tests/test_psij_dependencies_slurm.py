"""Dependent jobs through Slurm's own ``--dependency``, against the real Slurm.

psij's batch script exits 0 whatever the job did (gotcha 2); the plugin makes it exit with
the job's code, so that ``afterok`` does not start B after a failed A.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.psij.harness import (
    BOB,
    SLURM_WAIT,
    slurm_fixtures,
    squeue_field,
    unique,
)

pytestmark = [pytest.mark.slurm, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

WAIT = SLURM_WAIT
_slurm, psij = slurm_fixtures()


async def wait_reason(native_id: str, reason: str, timeout: float = WAIT) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = ""
    while loop.time() < deadline:
        seen = await asyncio.to_thread(squeue_field, native_id, "%T %r")
        if seen == f"PENDING {reason}":
            return seen
        await asyncio.sleep(0.3)
    raise AssertionError(f"slurm job {native_id}: {seen!r}, not PENDING {reason}")


async def test_when_a_fails_b_after_success_never_starts_and_c_after_failure_runs(psij):
    a = await psij.submit({"executable": "/bin/sh", "arguments": ["-c", "sleep 2; exit 3"], "name": unique("dep-a")},
                          executor="slurm")
    b = await psij.submit({"executable": "/bin/echo", "arguments": ["b ran"], "name": unique("dep-b"),
                           "after": {"succeeded": [a["job_id"]]}}, executor="slurm")
    c = await psij.submit({"executable": "/bin/echo", "arguments": ["c ran"], "name": unique("dep-c"),
                           "after": {"failed": a["job_id"]}}, executor="slurm")
    d = await psij.submit({"executable": "/bin/echo", "arguments": ["d ran"], "name": unique("dep-d"),
                           "after": {"ended": [a["job_id"]]}}, executor="slurm")
    _, b_status = await psij.status(b["job_id"], output="false")
    assert b_status["after"] == {"succeeded": [a["job_id"]]}
    assert b_status["custom_attributes"] == {}  # the scheduler option is the plugin's business
    a_final = await psij.wait_state(a["job_id"], timeout=WAIT)
    assert (a_final["state"], a_final["exit_code"]) == ("FAILED", 3)
    # Slurm itself now knows A failed ...
    c_final = await psij.wait_state(c["job_id"], timeout=WAIT)
    assert c_final["state"] == "COMPLETED"
    assert (await psij.status(c["job_id"]))[1]["stdout"] == "c ran\n"
    assert (await psij.wait_state(d["job_id"], timeout=WAIT))["state"] == "COMPLETED"
    # ... so B, which needed A to succeed, can never start.
    assert await wait_reason(b["native_id"], "DependencyNeverSatisfied")
    _, b_status = await psij.status(b["job_id"], output="false")
    assert b_status["state"] == "QUEUED"
    code, _ = await psij.cancel(b["job_id"])
    assert code == 200
    assert (await psij.wait_state(b["job_id"], ("CANCELED",), timeout=WAIT))["state"] == "CANCELED"


async def test_b_waits_for_a_to_succeed_then_runs(psij, tmp_path):
    gate = tmp_path / "gate"
    a = await psij.submit({"executable": "/bin/sh", "name": unique("dep-ok-a"),
                           "arguments": ["-c", f'while [ ! -e "{gate}" ]; do sleep 0.2; done']}, executor="slurm")
    b = await psij.submit({"executable": "/bin/echo", "arguments": ["after a"], "name": unique("dep-ok-b"),
                           "after": {"succeeded": [a["job_id"]]}}, executor="slurm")
    await wait_reason(b["native_id"], "Dependency")
    gate.touch()
    assert (await psij.wait_state(a["job_id"], timeout=WAIT))["state"] == "COMPLETED"
    assert (await psij.wait_state(b["job_id"], timeout=WAIT))["state"] == "COMPLETED"
    assert (await psij.status(b["job_id"]))[1]["stdout"] == "after a\n"


async def test_dependencies_on_unknown_foreign_or_local_jobs_are_refused(psij):
    a = await psij.submit({"executable": "/bin/true", "name": unique("dep-mine")}, executor="slurm")
    code, answer = await psij.submit_raw({"executor": "slurm", "job_spec": {
        "executable": "/bin/true", "after": {"succeeded": ["nosuchjob"]}}})
    assert code == 400 and "no job 'nosuchjob' of yours" in answer["detail"]
    code, answer = await psij.submit_raw({"executor": "slurm", "job_spec": {
        "executable": "/bin/true", "after": {"succeeded": [a["job_id"]]}}}, caller=BOB)
    assert code == 400 and "of yours" in answer["detail"]
    code, answer = await psij.submit_raw({"executor": "slurm", "job_spec": {
        "executable": "/bin/true", "after": {"finished": [a["job_id"]]}}})
    assert code == 400 and answer["detail"].startswith("job_spec.after.finished")
    code, answer = await psij.submit_raw({"executor": "local", "job_spec": {
        "executable": "/bin/true", "after": {"ended": [a["job_id"]]}}})
    assert code == 400 and "need a batch scheduler" in answer["detail"]
    await psij.wait_state(a["job_id"], timeout=WAIT)
