"""Job arrays without a scheduler: index syntax, the scheduler options, per-task output
paths in the rendered batch scripts (psij's own templates, through ``preview``), and the
parsing of what squeue and sacct say about tasks (output captured on the Slurm here).
The arrays themselves run in test_psij_arrays_slurm.py."""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import subprocess
from pathlib import Path

import pytest

from edge_agent.plugins.psij import arrays
from edge_agent.plugins.psij.spec import SpecError
from edge_agent.plugins.psij.store import JobRecord, owner_key
from tests.fixtures.psij.harness import ALICE, PsijHarness

FIXTURES = Path(__file__).parent / "fixtures"

# `squeue --me -r -h -t all -O ArrayJobID:|,ArrayTaskID:|,JobID:|,State:|,exit_code:|,Reason:` on Slurm 22.05
# while array 2 (tasks 0-4, task 3 exits 4) was running, with an ordinary job 1 of the same user.
SQUEUE = """1|N/A|1|COMPLETED|0|None
2|4|2|RUNNING|0|None
2|2|5|COMPLETED|0|None
2|0|3|COMPLETED|0|None
2|3|6|FAILED|1024|NonZeroExitCode
2|1|4|PENDING|0|Priority
9|[5-9%2]|9|PENDING|0|JobArrayTaskLimit
"""
# `sacct -X -n -P -j 2 -o JobID,JobIDRaw,State,ExitCode` once squeue had forgotten it.
SACCT = """2_0|3|COMPLETED|0:0
2_1|4|COMPLETED|0:0
2_2|5|CANCELLED by 0|0:0
2_3|6|FAILED|4:0
2_4|2|TIMEOUT|0:0
"""


@pytest.mark.parametrize(("raw", "indices", "throttle"), [
    ("0-4", [0, 1, 2, 3, 4], None),
    ("1,3,5-9:2%2", [1, 3, 5, 7, 9], 2),
    ([4, 2, 2], [2, 4], None),
    ({"indices": "0-2", "throttle": 1}, [0, 1, 2], 1),
])
def test_array_indices_in_slurms_syntax_or_as_a_list(raw, indices, throttle):
    assert arrays.parse_array(raw) == {"indices": indices, "throttle": throttle}


@pytest.mark.parametrize(("raw", "words"), [
    ("5-1", "goes up"), ("a-b", "not an index"), ("0-3%x", "at once"), ([], "no task"), ("0-20000", "at most"),
    ([-1], "from 0"), (7, "task indices such as"), ([True], "whole numbers"), ({"indices": "1", "x": 1}, "unknown"),
])
def test_bad_array_indices_say_what_is_wrong(raw, words):
    with pytest.raises(SpecError) as caught:
        arrays.parse_array(raw)
    assert words in str(caught.value) and caught.value.field.startswith("job_spec.array")


def test_indices_are_written_back_as_ranges_per_scheduler():
    assert arrays.compress([0, 1, 2, 5, 7, 8, 12]) == "0-2,5,7-8,12"
    assert arrays.scheduler_option("slurm", {"indices": [3, 7, 12], "throttle": None}) == {"slurm.array": "3,7,12"}
    assert arrays.scheduler_option("slurm", {"indices": list(range(20)), "throttle": 4}) == {"slurm.array": "0-19%4"}
    assert arrays.scheduler_option("pbs", {"indices": [0, 2, 4], "throttle": None}) == {"pbs.J": "0-4:2"}
    for executor, array, words in (("pbs", {"indices": [1, 3, 4], "throttle": None}, "one range"),
                                   ("pbs", {"indices": [1], "throttle": None}, "two tasks"),
                                   ("pbs", {"indices": [1, 2], "throttle": 1}, "no limit"),
                                   ("pbs_classic", {"indices": [1, 2], "throttle": None}, "Slurm or PBS"),
                                   ("local", {"indices": [1, 2], "throttle": None}, "Slurm or PBS")):
        with pytest.raises(SpecError, match=words):
            arrays.scheduler_option(executor, array)


def test_squeue_and_sacct_lines_become_task_states():
    seen = arrays.parse_squeue_tasks(SQUEUE, {"2", "9"})
    assert sorted(seen) == ["2", "9"]  # job 1 is no array of ours
    two = seen["2"]
    assert {i: (t["state"], t["exit_code"], t["native_id"]) for i, t in two.items()} == {
        0: ("COMPLETED", 0, "3"), 1: ("QUEUED", None, None), 2: ("COMPLETED", 0, "5"), 3: ("FAILED", 4, "6"),
        4: ("ACTIVE", None, "2")}
    assert sorted(seen["9"]) == [5, 6, 7, 8, 9] and {t["state"] for t in seen["9"].values()} == {"QUEUED"}
    done = arrays.parse_sacct_tasks(SACCT, {"2"})["2"]
    assert {i: (t["state"], t["exit_code"]) for i, t in done.items()} == {
        0: ("COMPLETED", 0), 1: ("COMPLETED", 0), 2: ("CANCELED", None), 3: ("FAILED", 4), 4: ("FAILED", 0)}
    assert done[4]["message"] == "reached its time limit"
    tasks = [{"index": i, **t} for i, t in done.items()]
    assert arrays.array_state(tasks) == "FAILED"
    assert arrays.summary(tasks) == "2 of 5 tasks failed: 3-4; 1 of 5 tasks canceled: 2"


def test_pbs_subjobs_become_task_states():
    text = (FIXTURES / "pbs" / "qstat_fxt.json").read_text()
    seen = arrays.parse_qstat_tasks(text, {"2104[].pbs01"})
    assert {i: (t["state"], t["exit_code"], t["native_id"]) for i, t in seen["2104[].pbs01"].items()} == {
        i: ("COMPLETED", 0, f"2104[{i}].pbs01") for i in (1, 2, 3)}
    data = json.loads(text)
    jobs = data["Jobs"]
    jobs["2104[1].pbs01"]["Exit_status"] = 271
    del jobs["2104[2].pbs01"]["Exit_status"]
    jobs["2104[3].pbs01"].update(job_state="Q")
    seen = arrays.parse_qstat_tasks(json.dumps(data), {"2104[].pbs01"})["2104[].pbs01"]
    assert (seen[1]["state"], seen[1]["exit_code"], seen[1]["message"]) == ("FAILED", 271, "killed by signal 15")
    assert seen[2]["state"] == "CANCELED" and (seen[3]["state"], seen[3]["native_id"]) == ("QUEUED", None)
    assert arrays.parse_qstat_tasks("qstat: Unknown Job Id", {"1[].pbs01"}) == {}


async def test_a_pbs_array_is_followed_by_its_subjobs(psij, monkeypatch, tmp_path):
    fake = runpy.run_path(str(FIXTURES / "pbs" / "fake_pbs.py"))["install"](tmp_path / "pbs-bin")
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_PBS_LOG", str(log))
    manager = psij.plugin.manager
    record = JobRecord(job_id="arr1", owner_key=owner_key(ALICE.uid), owner_uid=ALICE.uid, owner_user="alice",
                       executor="pbs", state="QUEUED", spec={"executable": "/bin/true", "array": {
                           "indices": [1, 2, 3], "throttle": None}}, job_dir=str(tmp_path / "arr1"),
                       fingerprint="-", native_id="2104[].pbs01", stdout_path=str(tmp_path / "%a.out"))
    manager.jobs.insert(record)
    manager.jobs.insert_tasks("arr1", [1, 2, 3])
    assert await asyncio.to_thread(manager.poll_arrays) == 1
    assert json.loads(log.read_text().splitlines()[-1]) == ["qstat", "-x", "-f", "-t", "-F", "json", "2104[].pbs01"]
    status = await psij.wait_state("arr1", timeout=10)
    assert (status["state"], status["exit_code"], status["array"]["count"]) == ("COMPLETED", 0, 3)
    _, listed = await psij.call("GET", f"tasks/{await psij.sid()}/arr1")
    assert [(t["index"], t["state"], t["stdout_path"]) for t in listed["tasks"]] == [
        (i, "COMPLETED", str(tmp_path / f"{i}.out")) for i in (1, 2, 3)]


@pytest.mark.parametrize(("states", "state"), [
    (["QUEUED", "QUEUED"], "QUEUED"), (["QUEUED", "ACTIVE"], "ACTIVE"), (["COMPLETED", "QUEUED"], "ACTIVE"),
    (["COMPLETED", "COMPLETED"], "COMPLETED"), (["COMPLETED", "CANCELED"], "CANCELED"),
    (["FAILED", "CANCELED"], "FAILED"),
])
def test_an_arrays_state_comes_from_its_tasks(states, state):
    assert arrays.array_state([{"state": s} for s in states]) == state


@pytest.fixture
async def psij(tmp_path):
    harness = await PsijHarness(tmp_path / "state").start()
    yield harness
    await harness.cleanup()


async def preview(psij, executor: str, **spec):
    body = {"job_spec": {"executable": "/bin/echo", "arguments": ["x"], **spec}, "executor": executor}
    return await psij.call("POST", f"preview/{await psij.sid()}", body)


@pytest.mark.parametrize(("executor", "directive", "variable"), [
    ("slurm", '#SBATCH --array="0-19%4"', "SLURM_ARRAY_TASK_ID"),
    ("pbs", '#PBS -J "0-19%4"', "PBS_ARRAY_INDEX"),
])
async def test_each_task_of_an_array_writes_its_own_files(psij, executor, directive, variable):
    if executor == "pbs":
        code, answer = await preview(psij, executor, array="0-19%4")
        assert code == 400 and "no limit" in answer["detail"]
        code, answer = await preview(psij, executor, array="0-19")
        directive = '#PBS -J "0-19"'
    else:
        code, answer = await preview(psij, executor, array="0-19%4")
    assert code == 200, answer
    script = answer["script"]
    assert directive in script.splitlines()
    assert answer["stdout_path"].endswith("/tasks/%a.stdout")
    launch = next(line for line in script.splitlines() if line.startswith("/bin/bash ") and "/bin/echo" in line)
    # The launcher's arguments, as bash expands them in task 7.
    words = subprocess.run(["bash", "-c", f'{variable}=7; printf "%s\\n" {launch.removeprefix("/bin/bash ")}'],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert arrays.task_path(answer["stdout_path"], 7) in words
    assert arrays.task_path(answer["stderr_path"], 7) in words


async def test_arrays_need_a_scheduler_and_a_file_per_task(psij, tmp_path):
    sid = await psij.sid()
    for executor, spec, words in (
        ("local", {"array": "0-3"}, "need a batch scheduler"),
        ("slurm", {"array": "0-3", "stdout_path": str(tmp_path / "out.txt")}, "%a"),
        ("slurm", {"array": "3-1"}, "goes up"),
    ):
        code, answer = await psij.call("POST", f"submit/{sid}",
                                       {"job_spec": {"executable": "/bin/true", **spec}, "executor": executor})
        assert code == 400 and answer["error"] == "invalid_job_spec" and words in answer["detail"], answer
    code, answer = await preview(psij, "pbs_classic", array="0-3")  # Torque's arrays are not followed
    assert code == 400 and "Slurm or PBS Professional" in answer["detail"], answer
    code, answer = await psij.submit_raw({"job_spec": {"executable": "/bin/true"}, "executor": "local"})
    assert code == 200
    await psij.wait_state(answer["job_id"])
    for method, route in (("GET", "tasks"), ("POST", "retry")):
        code, refused = await psij.call(method, f"{route}/{sid}/{answer['job_id']}", {} if method == "POST" else None)
        assert code == 400 and refused["error"] == "not_an_array", refused
