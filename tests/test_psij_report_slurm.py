"""Job reports against the real Slurm with accounting (``SLURM_WITH_DBD=1 bash ../shared/scripts/slurm-up.sh``).

Jobs ask for ``--acctg-freq=task=1``: the cluster samples memory every 30 s by default, and
a job shorter than that would have no MaxRSS at all (see fixtures/reports/README.md).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.fixtures.psij.harness import (
    BOB,
    SLURM_WAIT,
    slurm_fixtures,
    unique,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slurmdbd, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

WAIT = SLURM_WAIT
_slurm, psij = slurm_fixtures(accounting=True)
GIB = 1 << 30
# Holds about 150 MiB for a few seconds, burning little CPU.
HOG = "import time; a = bytearray(150 << 20); a[::4096] = b'x' * len(a[::4096]); time.sleep(4)"
# Keeps its one core busy for 3 s.
BUSY = "import time\nt = time.time() + 3\nwhile time.time() < t: pass"


async def report(psij, job_id: str, caller=None):
    sid = await psij.sid(caller) if caller else await psij.sid()
    kwargs = {"caller": caller} if caller else {}
    return await psij.call("GET", f"report/{sid}/{job_id}", **kwargs)


async def test_a_job_that_wastes_memory_gets_the_right_report_and_it_is_cached(psij, tmp_path, monkeypatch):
    job = await psij.submit({
        "executable": "/usr/bin/python3", "arguments": ["-c", HOG], "name": unique("report-hog"),
        "attributes": {"queue_name": "debug", "account": "proj1", "duration": 300},
        "resources": {"memory": 2 * GIB},
        "custom_attributes": {"slurm.acctg-freq": "task=1"}}, executor="slurm")
    code, early = await report(psij, job["job_id"])
    if early.get("state") != "COMPLETED":
        assert code == 409 and early["error"] == "job_not_finished"
    final = await psij.wait_state(job["job_id"], timeout=WAIT)
    assert final["state"] == "COMPLETED"
    code, made = await report(psij, job["job_id"])
    assert code == 200, made
    assert made["source"] == "sacct" and made["native_id"] == job["native_id"]
    assert made["memory_requested"] == 2 * GIB
    assert 140 << 20 <= made["memory_peak"] <= 400 << 20
    assert made["verdicts"][0].startswith("asked for 2 GB, peaked at ")
    assert made["verdicts"][0].endswith(" MB")
    assert made["memory_efficiency"] < 0.25 and made["waste"] > 0.5
    assert made["walltime_requested"] == 300 and 0 < made["elapsed"] < 300
    assert made["exit_code"] == 0 and made["cpus"] >= 1 and made["queue_wait"] >= 0
    assert made["node_list"] and made["account"] == "proj1" and made["queue_name"] == "debug"
    assert 0 <= made["cpu_efficiency"] < 0.5  # it mostly slept
    # Final accounting is kept on the agent: no second sacct call, even after a restart.
    await psij.restart()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sacct").write_text("#!/bin/sh\necho 'sacct: error: should not be called' >&2\nexit 1\n")
    (fake / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    code, again = await report(psij, job["job_id"])
    assert code == 200 and again == made
    # Another user sees nothing of it.
    code, answer = await report(psij, job["job_id"], caller=BOB)
    assert code == 404 and answer["error"] == "unknown_job"


@pytest.mark.slurm_alone  # asserts the CPU a busy job got
async def test_failed_job_report_and_recent_jobs_sorted_by_waste(psij):
    failing = await psij.submit({"executable": "/bin/sh", "arguments": ["-c", "echo oops >&2; exit 3"],
                                 "name": unique("report-fail"), "attributes": {"duration": 600}},
                                executor="slurm")
    busy = await psij.submit({"executable": "/usr/bin/python3", "name": unique("report-busy"),
                              "arguments": ["-c", BUSY], "attributes": {"duration": 60},
                              "custom_attributes": {"slurm.acctg-freq": "task=1"}}, executor="slurm")
    for job in (failing, busy):
        await psij.wait_state(job["job_id"], timeout=WAIT)
    code, made = await report(psij, failing["job_id"])
    assert code == 200 and made["state"] == "FAILED" and made["exit_code"] == 3
    assert made["scheduler_state"] in ("COMPLETED", "FAILED")  # psij's wrapper hides the code from Slurm
    assert "exited with code 3" in made["verdicts"]
    sid = await psij.sid()
    code, listed = await psij.call("GET", f"reports/{sid}", query={"limit": 10})
    assert code == 200 and listed["total"] == 2
    assert {r["job_id"] for r in listed["reports"]} == {failing["job_id"], busy["job_id"]}
    wastes = [r["waste"] for r in listed["reports"]]
    assert all(w is not None for w in wastes) and wastes == sorted(wastes, reverse=True)
    # The job that kept its core busy wasted less than the one that exited at once.
    busy_report = next(r for r in listed["reports"] if r["job_id"] == busy["job_id"])
    assert busy_report["cpu_efficiency"] > 0.5 and busy_report["memory_peak"]
    assert listed["reports"][0]["job_id"] == failing["job_id"]


@pytest.mark.slurm_alone  # asserts the CPU its busy tasks got
async def test_an_array_report_has_each_task_and_what_the_array_used(psij):
    """sacct lists an array's tasks (``<base>_<index>``), not the array: the report sums them."""
    script = BUSY.replace("3", "1.5") + "\nimport os, sys\nsys.exit(os.environ['SLURM_ARRAY_TASK_ID'] == '1')"
    job = await psij.submit({"executable": "/usr/bin/python3", "arguments": ["-c", script],
                             "name": unique("report-array"), "array": "0-2",
                             "attributes": {"queue_name": "debug", "duration": 120},
                             "resources": {"memory": 200 << 20},
                             "custom_attributes": {"slurm.acctg-freq": "task=1"}}, executor="slurm")
    final = await psij.wait_state(job["job_id"], timeout=WAIT)
    assert final["state"] == "FAILED", final
    code, made = await report(psij, job["job_id"])
    # slurmdbd writes a task's record a moment after it ends: until all three are there the
    # report says how many it lacks (and is not cached), then it has them all.
    for _ in range(60):
        if code != 200 or (made.get("source") == "sacct" and not made.get("tasks_unaccounted")):
            break
        await asyncio.sleep(0.5)
        code, made = await report(psij, job["job_id"])
    assert code == 200 and made["source"] == "sacct", made
    assert made["tasks_unaccounted"] == 0 and made["task_count"] == 3
    assert [t["index"] for t in made["tasks"]] == [0, 1, 2]
    assert [t["scheduler_state"] for t in made["tasks"]] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert made["reason"] == final["message"] and "1 of 3 tasks failed" in made["reason"]
    assert made["memory_requested"] == 200 << 20 and made["memory_peak"]
    assert made["verdicts"][0].startswith("asked for 200 MB per task, the largest task peaked at ")
    assert made["cpu_efficiency"] > 0.3 and all(t["cpu_time"] > 0 for t in made["tasks"])
    assert made["walltime_requested"] == 120 and 1 <= made["elapsed"] < 120
