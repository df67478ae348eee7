"""Job reports (like seff) from captured sacct and written qstat -x -f output, and the verdicts."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.plugins.psij.report import (
    array_facts,
    build_report,
    fmt_bytes,
    fmt_duration,
    parse_qstat_xf,
    parse_sacct,
    size_bytes,
    slurm_cpu_time,
)

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
GIB = 1 << 30


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def record(**kw):
    defaults = dict(job_id="j1", native_id="1", executor="slurm", state="COMPLETED", exit_code=0, message=None,
                    spec={"executable": "/bin/true", "attributes": {}, "resources": {}}, history=[], created=1.0)
    return SimpleNamespace(**{**defaults, **kw})


def test_captured_sacct_gives_peak_memory_from_steps_and_times_from_the_allocation():
    jobs = parse_sacct(fixture("sacct_22.05.txt"))
    assert set(jobs) == {"82", "85", "86", "87", "88", "89"}
    j = jobs["85"]
    assert j["memory_peak"] == 219904 * 1024 and j["memory_requested"] == GIB
    assert (j["elapsed"], j["walltime_requested"], j["queue_wait"]) == (4, 120, 0)
    assert j["cpus"] == 1 and j["node_list"] == "vm" and j["final"] is True
    assert j["cpu_time"] == pytest.approx(0.193)
    assert jobs["82"]["memory_peak"] is None  # no sample in a 4 s job without --acctg-freq
    # Two srun tasks: the step's peak counts both, as seff does.
    assert jobs["87"]["memory_peak"] == 2 * 66068 * 1024 and jobs["87"]["queue_wait"] == 3
    assert (jobs["86"]["scheduler_state"], jobs["86"]["scheduler_exit_code"]) == ("FAILED", 3)
    assert jobs["88"]["scheduler_state"] == "CANCELLED" and jobs["88"]["node_list"] is None
    assert jobs["88"]["reason"] == "was cancelled" and jobs["88"]["start_time"] is None


def test_written_sacct_timeout_oom_per_cpu_memory_array_task_and_running_job():
    jobs = parse_sacct(fixture("sacct_written.txt"))
    timeout = jobs["301"]
    assert timeout["reason"] == "hit its wall-time limit" and timeout["queue_wait"] == 600
    assert timeout["memory_requested"] == 64 * GIB and timeout["memory_peak"] == 3 * GIB
    assert timeout["cpu_time"] == 20 * 3600
    oom = jobs["302"]
    assert oom["memory_requested"] == 4 * 4000 * (1 << 20)  # 4000Mc: per CPU
    assert oom["reason"] == "ran out of memory" and oom["signal"] == 125 and oom["node_list"] == "cn[002-003]"
    assert oom["memory_peak"] == 15990 * (1 << 20)
    assert jobs["303_7"]["memory_requested"] == 2 * GIB  # 2Gn: per node, one node
    assert jobs["304"]["final"] is False and jobs["304"]["end_time"] is None


def test_the_verdict_says_what_was_asked_for_and_what_was_used():
    facts = parse_sacct(fixture("sacct_written.txt"))["301"]
    report = build_report(record(state="FAILED", exit_code=None), facts, source="sacct")
    assert report["verdicts"][0] == "asked for 64 GB, peaked at 3 GB"
    assert "used 62% of 32 cores while it ran" in report["verdicts"]
    assert "asked for 1 h, ran 1 h" in report["verdicts"]
    assert "hit its wall-time limit" in report["verdicts"] and "waited 10 min in the queue" in report["verdicts"]
    assert report["memory_efficiency"] == pytest.approx(3 / 64, abs=1e-4)
    assert 0 < report["waste"] < 1 and report["source"] == "sacct"


def test_psij_exit_code_wins_over_slurms_zero():
    # psij's wrapper exits 0 whatever the job did (gotcha 2): the record knows better.
    facts = parse_sacct(fixture("sacct_22.05.txt"))["82"]
    report = build_report(record(state="FAILED", exit_code=3), facts, source="sacct")
    assert report["exit_code"] == 3 and report["scheduler_exit_code"] == 0
    assert "exited with code 3" in report["verdicts"]


def test_pbs_qstat_xf_finished_jobs():
    jobs = parse_qstat_xf(fixture("qstat_xf_finished.txt"))
    big = jobs["5001"]
    assert big["memory_requested"] == 64 * GIB and big["memory_peak"] == 3 * GIB
    assert big["node_list"] == "cn001,cn002" and big["cpus"] == 8 and big["queue_wait"] == 600
    assert big["elapsed"] == 3600 and big["walltime_requested"] == 4 * 3600 and big["final"] is True
    over = jobs["5002"]
    assert (over["signal"], over["scheduler_exit_code"]) == (15, None)
    assert over["reason"] == "was killed by signal 15"
    report = build_report(record(executor="pbs", native_id="5001.pbs01"), big, source="qstat")
    assert report["verdicts"][0] == "asked for 64 GB, peaked at 3 GB"
    assert "asked for 4 h, ran 1 h" in report["verdicts"]


def test_pbs_shared_fixture_finished_jobs_parse():
    jobs = parse_qstat_xf((Path(__file__).parent / "fixtures" / "pbs" / "qstat_fx.txt").read_text())
    assert jobs["998"]["final"] and jobs["998"]["scheduler_exit_code"] == 0
    assert jobs["998"]["memory_peak"] == 1024000 * 1024 and jobs["998"]["cpu_time"] == 3900
    assert jobs["999"]["signal"] == 15


def test_a_local_job_gets_what_the_agent_saw():
    history = [{"state": "QUEUED", "time": 100.0}, {"state": "ACTIVE", "time": 102.0},
               {"state": "COMPLETED", "time": 112.0}]
    report = build_report(record(executor="local", history=history,
                                 spec={"attributes": {"duration": 600}, "resources": {}}), None, source="agent")
    assert (report["elapsed"], report["queue_wait"], report["walltime_requested"]) == (10.0, 2.0, 600)
    assert report["verdicts"] == ["asked for 10 min, ran 10 s", "exited with code 0", "waited 2 s in the queue"]


@pytest.mark.parametrize(("text", "expected"), [
    ("219904K", 219904 * 1024), ("1G", GIB), ("1000M", 1000 << 20), ("1024000kb", 1024000 * 1024),
    ("64gb", 64 * GIB), ("", None), ("0", 0),
])
def test_sizes(text, expected):
    assert size_bytes(text) == expected


def test_cpu_times_and_formats():
    assert slurm_cpu_time("00:00.326") == pytest.approx(0.326)
    assert slurm_cpu_time("01:02:03") == 3723 and slurm_cpu_time("1-07:58:10") == 86400 + 28690
    assert fmt_bytes(64 * GIB) == "64 GB" and fmt_bytes(219904 * 1024) == "215 MB"
    assert fmt_duration(5400) == "1 h 30 min" and fmt_duration(90) == "1 min 30 s"


def test_an_array_report_sums_its_tasks_cpu_and_takes_the_largest_task_as_what_each_needed():
    """Captured from the real Slurm here: 4 tasks of 200M, one at a time, task 1 exits 1."""
    facts = parse_sacct(fixture("sacct_array_22.05.txt"))
    assert array_facts(facts, "8") is None and array_facts(facts, "9_1") is None
    array = array_facts(facts, "9")
    assert array["final"] is True and array["scheduler_state"] == "FAILED" and array["scheduler_exit_code"] == 1
    assert [t["index"] for t in array["tasks"]] == [0, 1, 2, 3]
    assert [t["scheduler_state"] for t in array["tasks"]] == ["COMPLETED", "FAILED", "COMPLETED", "COMPLETED"]
    assert array["memory_requested"] == 200 << 20 and array["memory_peak"] == 76428 << 10  # task 1's
    assert array["cpu_time"] == pytest.approx(1.511 + 1.535 + 1.616 + 1.478)
    assert array["allocated_cpu_seconds"] == 4 * 2 * 1 and array["elapsed"] == 2
    assert array["queue_wait"] == 1  # until the first task started
    assert array["end_time"] - array["start_time"] == 11  # the last task ended 11 s after the first began
    spec = {"executable": "/bin/sh", "attributes": {"duration": 300}, "resources": {},
            "array": {"indices": [0, 1, 2, 3], "throttle": 1}}
    report = build_report(record(native_id="9", state="FAILED", exit_code=1, message="1 of 4 tasks failed: 1",
                                 spec=spec), array, source="sacct")
    assert report["task_count"] == 4 and report["tasks"][1]["exit_code"] == 1
    assert report["cpu_efficiency"] == pytest.approx(6.14 / 8, abs=1e-3)
    assert report["memory_efficiency"] == pytest.approx((76428 << 10) / (200 << 20), abs=1e-3)
    assert report["reason"] == "1 of 4 tasks failed: 1"
    assert report["verdicts"][:3] == ["asked for 200 MB per task, the largest task peaked at 75 MB",
                                      "used 77% of 1 core per task over 4 tasks while it ran",
                                      "asked for 5 min per task, the longest task ran 2 s"]


def test_an_array_whose_tasks_accounting_is_not_all_written_yet_is_not_final():
    """slurmdbd writes a task's record a moment after it ends: until every task of the array
    is there, the report is not final (so it is not cached) and counts only what is."""
    facts = parse_sacct(fixture("sacct_array_22.05.txt"))
    assert array_facts(facts, "9", [0, 1, 2, 3])["final"] is True
    missing = array_facts(facts, "9", [0, 1, 2, 3, 4])
    assert missing["final"] is False and missing["end_time"] is None and len(missing["tasks"]) == 4
    assert missing["tasks_unaccounted"] == 1
    one = {k: v for k, v in facts.items() if k == "9_0"}
    assert array_facts(one, "9", [0, 1, 2, 3])["final"] is False


def test_an_array_with_tasks_still_pending_is_not_final():
    array = array_facts(parse_sacct(fixture("sacct_array_running_22.05.txt")), "9")
    assert array["final"] is False and [t["index"] for t in array["tasks"]] == [0]
    assert array["end_time"] is None and array["memory_peak"] == 76332 << 10  # task 0 ended, the rest wait
