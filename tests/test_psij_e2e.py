"""psij end to end: a real bridge server, a real agent process, and the SDK's PsijClient.

The agent is started as users start it, with ``--option psij.poll_interval=1``.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
import uuid

import pytest

from edge_agent.client import BadRequest, BridgeClient, NotFound
from edge_agent.plugins.psij.client import PsijClient
from tests.fixtures.psij.harness import slurm_running
from tests.support.live import ROOT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

OPTIONS = ["psij.poll_interval=1"]


def test_sdk_submits_follows_and_cancels_local_jobs_through_a_real_bridge(edge_setup):
    s = edge_setup(plugins="psij", options=OPTIONS)
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        pj = bc.get_edge_client(s.edge).get_plugin("psij")
        assert isinstance(pj, PsijClient)
        executors = {e["name"]: e for e in pj.executors()["executors"]}
        assert executors["local"]["ready"] is True

        job = pj.submit_job({"executable": "/bin/sh", "arguments": ["-c", "echo hello $WHO; exit 2"],
                             "environment": {"WHO": "sdk"}})
        assert job["native_id"] and job["replayed"] is False
        seen: list[str] = []
        final = pj.wait_job(job["job_id"], timeout=60, interval=0.2, progress=lambda st: seen.append(st["state"]))
        assert (final["state"], final["exit_code"], final["stdout"]) == ("FAILED", 2, "hello sdk\n")
        assert seen[-1] == "FAILED"

        # Tailing through the bridge: offsets come back and go out again.
        chunks = list(pj.follow_output(job["job_id"], interval=0.2, timeout=30))
        assert chunks == [("stdout", "hello sdk\n")]
        rest = pj.get_job_status(job["job_id"], stdout_offset=final["stdout_offset"])
        assert rest["stdout"] == "" and rest["stdout_offset"] == final["stdout_offset"]

        # The bridge forwards Idempotency-Key: a retried submit is the same job.
        key = uuid.uuid4().hex
        spec = {"executable": "/bin/echo", "arguments": ["once"]}
        first = pj.submit_job(spec, idempotency_key=key)
        again = pj.submit_job(spec, idempotency_key=key)
        assert again["job_id"] == first["job_id"] and again["replayed"] is True

        # Errors are typed and carry the detail.
        with pytest.raises(BadRequest) as bad:
            pj.submit_job({"executable": "/no/such/program"})
        assert bad.value.error == "invalid_job_spec" and "/no/such/program" in bad.value.detail
        with pytest.raises(BadRequest) as bad:
            pj.submit_job({"executable": "/bin/true"}, executor="nosuch")
        assert bad.value.error == "unknown_executor"
        with pytest.raises(NotFound):
            pj.get_job_status("no-such-job")

        long = pj.submit_job({"executable": "/bin/sleep", "arguments": ["300"]})
        wait_for(lambda: pj.get_job_status(long["job_id"], output=False)["state"] == "ACTIVE", 30, what="ACTIVE")
        assert pj.cancel_job(long["job_id"])["cancel_requested"] is True
        assert pj.wait_job(long["job_id"], timeout=60, interval=0.2)["state"] == "CANCELED"

        listing = pj.list_jobs()
        assert listing["total"] == 3  # the replayed submit made no new job
        assert {j["job_id"] for j in pj.list_jobs(state="CANCELED")["jobs"]} == {long["job_id"]}
        with pytest.raises(TimeoutError):
            blocked = pj.submit_job({"executable": "/bin/sleep", "arguments": ["300"]})
            pj.wait_job(blocked["job_id"], timeout=0.5, interval=0.1)
        pj.cancel_job(blocked["job_id"])

    # The example script, as a user runs it against their bridge.
    env = {**os.environ, "RADICAL_BRIDGE_URL": s.bridge.url, "RADICAL_API_TOKEN": s.token}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "psij_submit.py"), s.edge, "--env", "X=42",
                          "--", "/bin/sh", "-c", "echo out $X; echo err >&2; exit 3"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 3, run.stderr
    assert run.stdout == "out 42\n" and "err\n" in run.stderr and "FAILED exit_code=3" in run.stderr


def test_jobs_and_keys_survive_a_real_agent_restart(edge_setup, tmp_path):
    s = edge_setup(plugins="psij", options=OPTIONS)
    gate = tmp_path / "gate"
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        pj = bc.get_edge_client(s.edge).get_plugin("psij")
        spec = {"executable": "/bin/sh",
                "arguments": ["-c", f'echo before; while [ ! -e "{gate}" ]; do sleep 0.1; done; echo after; exit 6']}
        job = pj.submit_job(spec, idempotency_key="survivor")
        wait_for(lambda: pj.get_job_status(job["job_id"])["stdout"] == "before\n", 30, what="first output")

        assert s.agent.stop() == 0  # SIGTERM: the agent exits; its local job keeps running
        wait_for(lambda: not s.bridge.edge_online(s.token, s.edge), 20, what="edge offline")
        # A submit while the edge is offline is retried with its key until the agent is back.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(pj.submit_job, {"executable": "/bin/echo", "arguments": ["late"]}, retries=8)
            time.sleep(0.5)
            s.agent.start()
            late = pending.result(timeout=120)
        wait_for(lambda: s.bridge.edge_online(s.token, s.edge), 30, what="edge back online")
        assert pj.wait_job(late["job_id"], timeout=60, interval=0.2)["stdout"] == "late\n"
        assert pj.list_jobs()["total"] == 2

        # The old session died with the agent: the client opens a new one by itself.
        status = pj.get_job_status(job["job_id"], output=False)
        assert status["state"] == "ACTIVE"
        assert pj.submit_job(spec, idempotency_key="survivor")["job_id"] == job["job_id"]
        gate.touch()
        final = pj.wait_job(job["job_id"], timeout=60, interval=0.2)
        assert (final["state"], final["exit_code"], final["stdout"]) == ("FAILED", 6, "before\nafter\n")
    assert "re-attached 1 job(s)" in s.agent.log()


@pytest.mark.slurm
def test_sdk_runs_a_slurm_job_through_a_real_bridge(edge_setup):
    ok, reason = slurm_running()
    if not ok:
        pytest.skip(reason)
    s = edge_setup(plugins="psij", options=OPTIONS)
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        pj = bc.get_edge_client(s.edge).get_plugin("psij")
        name = f"psij-e2e-{uuid.uuid4().hex[:8]}"
        job = pj.submit_job({"executable": "/bin/sh", "arguments": ["-c", "echo on $SLURM_JOB_PARTITION"],
                             "name": name, "attributes": {"queue_name": "debug", "duration": 60}},
                            executor="slurm")
        try:
            final = pj.wait_job(job["job_id"], timeout=240, interval=0.5)
        finally:
            if pj.get_job_status(job["job_id"], output=False)["state"] not in ("COMPLETED", "FAILED", "CANCELED"):
                pj.cancel_job(job["job_id"])
        assert (final["state"], final["exit_code"], final["stdout"]) == ("COMPLETED", 0, "on debug\n")
        with pytest.raises(BadRequest) as bad:
            pj.submit_job({"executable": "/bin/true", "attributes": {"queue_name": "nosuch"}}, executor="slurm")
        assert bad.value.status == 422 and "invalid partition" in bad.value.detail.lower()


@pytest.mark.slurm
@pytest.mark.slurmdbd
def test_sdk_reads_job_reports_through_a_real_bridge(edge_setup):
    from edge_agent.client import Conflict
    from tests.fixtures.psij.harness import slurm_enforces_accounts

    for check in (slurm_running, slurm_enforces_accounts):
        ok, reason = check()
        if not ok:
            pytest.skip(reason)
    s = edge_setup(plugins="psij", options=OPTIONS)
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        pj = bc.get_edge_client(s.edge).get_plugin("psij")
        gate = f"/tmp/psij-e2e-gate-{uuid.uuid4().hex[:8]}"
        hog = (f"import os, time; a = bytearray(120 << 20); a[::4096] = b'x' * len(a[::4096])\n"
               f"while not os.path.exists({gate!r}): time.sleep(0.2)\ntime.sleep(3)")
        job = pj.submit_job({"executable": "/usr/bin/python3", "arguments": ["-c", hog],
                             "name": f"psij-e2e-report-{uuid.uuid4().hex[:6]}",
                             "attributes": {"queue_name": "debug", "duration": 600},
                             "resources": {"memory": 1 << 30},
                             "custom_attributes": {"slurm.acctg-freq": "task=1"}}, executor="slurm")
        try:
            wait_for(lambda: pj.get_job_status(job["job_id"], output=False)["state"] == "ACTIVE", 240,
                     what="job running")
            with pytest.raises(Conflict) as running:
                pj.get_job_report(job["job_id"])
            assert running.value.error == "job_not_finished"
        finally:
            open(gate, "w").close()
        pj.wait_job(job["job_id"], timeout=240, interval=0.5)
        os.unlink(gate)
        report = pj.get_job_report(job["job_id"])
        assert report["source"] == "sacct" and report["state"] == "COMPLETED"
        assert report["verdicts"][0].startswith("asked for 1 GB, peaked at ")
        assert report["memory_peak"] >= 100 << 20 and report["memory_efficiency"] < 0.5
        listed = pj.list_job_reports(limit=5)
        assert [r["job_id"] for r in listed] == [job["job_id"]]
