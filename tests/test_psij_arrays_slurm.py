"""Job arrays on the real Slurm (``SLURM_WITH_DBD=1 bash ../shared/scripts/slurm-up.sh``).

psij follows only an array's base id; the plugin follows the tasks itself (arrays.py). The
issue's proof: an array of 20 tasks of which 3 fail, then a retry of only those 3.
"""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.client.errors import Conflict
from tests.fixtures.psij.harness import BOB, SLURM_WAIT, HostEdge, slurm_fixtures, unique

pytestmark = [pytest.mark.slurm, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

_slurm, psij = slurm_fixtures()
FAILING = (3, 7, 12)


def flaky(marks) -> str:
    """Tasks 3, 7 and 12 fail the first time (exit 5) and succeed when run again."""
    return (f'i=$SLURM_ARRAY_TASK_ID; if [ -e "{marks}/ok-$i" ]; then echo "retried $i"; exit 0; fi; '
            f'case $i in 3|7|12) touch "{marks}/ok-$i"; echo "task $i failed" >&2; exit 5;; esac; '
            f'echo "task $i of $SLURM_ARRAY_JOB_ID"')


async def call(psij, method: str, route: str, job_id: str, body=None, caller=None, **query):
    kwargs = {"caller": caller} if caller else {}
    sid = await psij.sid(caller) if caller else await psij.sid()
    return await psij.call(method, f"{route}/{sid}/{job_id}", body, query=query or None, **kwargs)


async def test_array_of_20_with_3_failures_then_a_retry_of_only_those(psij, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    job = await psij.submit({"executable": "/bin/sh", "arguments": ["-c", flaky(marks)], "name": unique("array"),
                             "array": "0-19", "attributes": {"duration": 120}}, executor="slurm")
    assert job["state"] == "QUEUED" and job["native_id"].isdigit()
    final = await psij.wait_state(job["job_id"], timeout=SLURM_WAIT)
    assert final["state"] == "FAILED" and final["exit_code"] == 5, final
    assert final["message"] == "3 of 20 tasks failed: 3,7,12"
    assert final["array"] == {"indices": "0-19", "count": 20, "throttle": None}

    code, listed = await call(psij, "GET", "tasks", job["job_id"])
    assert code == 200, listed
    tasks = {t["index"]: t for t in listed["tasks"]}
    assert sorted(tasks) == list(range(20))
    assert {i for i, t in tasks.items() if t["state"] == "FAILED"} == set(FAILING)
    assert all(t["state"] == "COMPLETED" and t["exit_code"] == 0 for i, t in tasks.items() if i not in FAILING)
    assert all(tasks[i]["exit_code"] == 5 for i in FAILING)
    # Each task ran as its own Slurm job and wrote its own files.
    assert len({t["native_id"] for t in tasks.values()}) == 20
    code, four = await call(psij, "GET", "task", f"{job['job_id']}/4")
    assert code == 200 and four["stdout"] == f"task 4 of {job['native_id']}\n", four
    code, three = await call(psij, "GET", "task", f"{job['job_id']}/3")
    assert three["state"] == "FAILED" and three["stderr"] == "task 3 failed\n" and three["stdout"] == ""
    listed_jobs = await psij.list_jobs()
    row = next(j for j in listed_jobs["jobs"] if j["job_id"] == job["job_id"])
    assert row["tasks"] == {"COMPLETED": 17, "FAILED": 3}
    assert [e["state"] for e in psij.events(job["job_id"])][-1] == "FAILED"

    # Someone else neither sees the tasks nor retries them.
    assert (await call(psij, "GET", "tasks", job["job_id"], caller=BOB))[0] == 404
    assert (await call(psij, "POST", "retry", job["job_id"], {}, caller=BOB))[0] == 404
    code, bad = await call(psij, "POST", "retry", job["job_id"], {"tasks": [4]})
    assert code == 409 and bad["error"] == "task_not_retryable", bad

    code, retry = await call(psij, "POST", "retry", job["job_id"], {})
    assert code == 200, retry
    assert retry["tasks"] == list(FAILING) and retry["retry_of"] == job["job_id"]
    psij.submitted.append(retry["job_id"])
    psij.slurm_ids.add(retry["native_id"])
    again = await psij.wait_state(retry["job_id"], timeout=SLURM_WAIT)
    assert again["state"] == "COMPLETED" and again["exit_code"] == 0, again
    assert again["array"]["indices"] == "3,7,12" and again["retry_of"] == job["job_id"]
    code, second = await call(psij, "GET", "tasks", retry["job_id"])
    assert [(t["index"], t["state"]) for t in second["tasks"]] == [(i, "COMPLETED") for i in FAILING]
    code, seven = await call(psij, "GET", "task", f"{retry['job_id']}/7")
    assert seven["stdout"] == "retried 7\n"
    # The first attempt keeps its output, and says where its failed tasks went.
    code, first = await call(psij, "GET", "tasks", job["job_id"])
    assert {t["index"]: t["retried_by"] for t in first["tasks"] if t["retried_by"]} == {
        i: retry["job_id"] for i in FAILING}
    code, nothing = await call(psij, "POST", "retry", job["job_id"], {})
    assert code == 409 and nothing["error"] == "nothing_to_retry", nothing


async def test_canceling_an_array_cancels_its_tasks(psij):
    job = await psij.submit({"executable": "/bin/sleep", "arguments": ["60"], "name": unique("array-cancel"),
                             "array": "0-3%1", "attributes": {"duration": 120}}, executor="slurm")
    code, answer = await psij.cancel(job["job_id"])
    assert code == 200 and answer["cancel_requested"], answer
    final = await psij.wait_state(job["job_id"], timeout=SLURM_WAIT)
    assert final["state"] == "CANCELED", final
    code, listed = await call(psij, "GET", "tasks", job["job_id"])
    assert {t["state"] for t in listed["tasks"]} == {"CANCELED"}
    code, retry = await call(psij, "POST", "retry", job["job_id"], {"tasks": [1, 2]})
    assert code == 200 and retry["tasks"] == [1, 2]
    psij.submitted.append(retry["job_id"])
    psij.slurm_ids.add(retry["native_id"])


async def test_a_sweep_becomes_one_array_and_its_failed_sets_are_retried(psij, tmp_path):
    sdk = HostEdge(psij.host, asyncio.get_running_loop()).get_plugin("psij")
    mark = tmp_path / "second-time"
    # Set 1 fails the first time only.
    script = f'if [ "$1" = fail ] && [ ! -e "{mark}" ]; then touch "{mark}"; exit 9; fi; echo "got $1 ${{MODE:-}}"'
    spec = {"executable": "/bin/sh", "arguments": ["-c", script, "sweep"], "name": unique("sweep"),
            "attributes": {"duration": 120}}
    params = [["a"], ["fail"], {"MODE": "env"}]

    def run():
        sweep = sdk.submit_sweep(spec, params, executor="slurm")  # auto: 120 s is not small
        psij.submitted.append(sweep.job_id)
        psij.slurm_ids.add(sweep.job["native_id"])
        results = sweep.wait(timeout=SLURM_WAIT, interval=0.5)
        again = sweep.retry_failed()
        psij.submitted.append(again.job_id)
        psij.slurm_ids.add(again.job["native_id"])
        return sweep, results, again, again.wait(timeout=SLURM_WAIT, interval=0.5)

    sweep, results, again, retried = await asyncio.to_thread(run)
    assert sweep.via == "array"
    assert [(r["index"], r["params"], r["state"], r["exit_code"], r["stdout"]) for r in results] == [
        (0, ["a"], "COMPLETED", 0, "got a \n"), (1, ["fail"], "FAILED", 9, ""), (2, {"MODE": "env"}, "COMPLETED", 0,
                                                                                "got  env\n")]
    assert [(r["index"], r["state"], r["stdout"]) for r in retried] == [(1, "COMPLETED", "got fail \n")]
    with pytest.raises(Conflict):
        await asyncio.to_thread(again.retry_failed)
