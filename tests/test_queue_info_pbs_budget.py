"""Budgets on PBS (usage/{sid}) and queue charge factors, through the queue_info plugin.

PBS cannot run here: fake_pbs.py answers ``qstat -x -f -t`` with tests/fixtures/pbs/qstat_fxt.*
(written in PBS Pro 2022.1's formats, see the README there): finished jobs of two accounts over
several days, an array whose subjobs carry the usage, a running and a queued job, and a job that
names only its ``project``. Limits come from the site's ``queue_info.budget_limits``.
"""

from __future__ import annotations

import json
import runpy
from datetime import date
from pathlib import Path

import pytest

from edge_agent.host import PluginHost
from edge_agent.plugin import Caller, Request
from edge_agent.plugins.queue_info.budget import parse_pbs_usage, parse_site_limits
from edge_agent.plugins.queue_info.pbs import flatten
from edge_agent.plugins.queue_info.plugin import QueueInfoPlugin, parse_charge_factors
from edge_agent.plugins.queue_info.records import charge_factor, parse_billing_weights

FIXTURES = Path(__file__).parent / "fixtures"
OWNER = Caller(user="owner", uid=1, role="owner", scope="full")
# Core-hours in qstat_fxt: ncpus * walltime used, per account.
CHEM01 = {"2026-11-23": 8 * 2.0, "2026-11-24": 128 * 0.25, "2026-11-25": 3 * 4 * 0.25}
ML_FINISHED = 16 * 1.25  # 2103, which exited 271; 2105 (32 cores, 3 h so far) still runs: today


@pytest.fixture
def pbs_bin(tmp_path) -> Path:
    return runpy.run_path(str(FIXTURES / "pbs" / "fake_pbs.py"))["install"](tmp_path / "pbs-bin")


async def usage(tmp_path, pbs_bin, query: str, **settings):
    config = {"backend": "pbs", "bin_dir": str(pbs_bin), "budget_period_start": "2026-11-01",
              "budget_period_end": "2026-12-31", **settings}
    host = PluginHost([QueueInfoPlugin], state_dir=tmp_path / "state", config={"queue_info": config})
    plugin = host.plugins["queue_info"]
    try:
        sid = (await plugin.create_session(OWNER, {})).sid
        response = await plugin.handle(Request("GET", f"usage/{sid}", query=query, caller=OWNER))
        return response.status, json.loads(response.body)
    finally:
        await plugin.stop()


@pytest.mark.parametrize("json_mode", [True, False])
async def test_pbs_burn_down_of_two_accounts_from_the_job_history(tmp_path, pbs_bin, monkeypatch, json_mode):
    if not json_mode:
        monkeypatch.setenv("FAKE_PBS_NO_JSON", "1")  # a PBS without -F json: the text form
    code, body = await usage(tmp_path, pbs_bin, "accounts=chem01,ml_project,physics",
                             budget_limits="chem01=100,ml_project=500")
    assert code == 200, body
    made = {a["account"]: a for a in body["accounts"]}
    chem = made["chem01"]
    assert chem["used"] == pytest.approx(sum(CHEM01.values()))
    assert {d["date"]: d["day"] for d in chem["history"] if d["day"]} == pytest.approx(CHEM01)
    assert (chem["limit"], chem["remaining"]) == (100, pytest.approx(100 - sum(CHEM01.values())))
    assert chem["period_end"] == "2026-12-31" and chem["pace_per_day"] is not None
    ml = made["ml_project"]
    assert ml["used"] == pytest.approx(ML_FINISHED + 32 * 3.0)
    assert ml["history"][-1]["date"] == date.today().isoformat() and ml["history"][-1]["day"] >= 96
    assert made["physics"]["used"] == pytest.approx(10.0) and made["physics"]["limit"] is None
    assert "no limit is set" in made["physics"]["verdict"]
    assert body["source"] == "qstat -x -f -t"


async def test_pbs_default_accounts_are_those_of_the_agent_users_jobs(tmp_path, pbs_bin, monkeypatch):
    monkeypatch.setenv("LOGNAME", "alice")
    monkeypatch.setenv("USER", "alice")
    code, body = await usage(tmp_path, pbs_bin, "")
    assert code == 200, body
    assert [a["account"] for a in body["accounts"]] == ["chem01", "ml_project"]
    code, bad = await usage(tmp_path, pbs_bin, "", budget_limits="chem01=lots")
    assert code == 500 and bad["error"] == "bad_setting" and "chem01=lots" in bad["detail"]


def test_array_parents_and_queued_jobs_cost_nothing_and_old_jobs_are_outside_the_period():
    jobs = {name: flatten(attrs) for name, attrs in
            json.loads((FIXTURES / "pbs" / "qstat_fxt.json").read_text())["Jobs"].items()}
    late = parse_pbs_usage(jobs, today=date(2026, 12, 3), start=date(2026, 11, 25))
    assert late["chem01"] == {date(2026, 11, 25): pytest.approx(3.0)}  # the subjobs, not their parent
    assert "2106.pbs01" in jobs and all(d != date(2026, 12, 3) for d in late.get("chem01", {}))
    assert parse_site_limits("a=1, b=2.5") == {"a": 1.0, "b": 2.5}
    with pytest.raises(ValueError, match="'b'"):
        parse_site_limits("a=1,b")


def test_charge_factor_from_slurms_billing_weights_and_the_sites_setting():
    # A partition line as `scontrol -o show partition` prints it with TRESBillingWeights set
    # (the Slurm here has none; this is the captured debug line with the weights added).
    weights = parse_billing_weights("CPU=1.0,Mem=0.25G,GRES/gpu=2.0")
    assert weights == {"CPU": 1.0, "Mem": 0.25, "GRES/gpu": 2.0}
    assert parse_billing_weights("CPU=2,Mem=256M")["Mem"] == pytest.approx(0.25)  # per GB either way
    # A node of 64 cores, 256 GB and 4 GPUs: (64 + 64 + 8) / 64 per core-hour.
    assert charge_factor(weights, cpus=64, mem_mb=256 * 1024, gpus=4) == pytest.approx(136 / 64)
    assert charge_factor({}, cpus=64, mem_mb=1, gpus=0) is None
    assert parse_charge_factors("gpu=4, debug=0.5") == {"gpu": 4.0, "debug": 0.5}
    with pytest.raises(ValueError, match="gpu=-1"):
        parse_charge_factors("gpu=-1")


def test_scontrol_partitions_carry_their_billing_weights():
    from edge_agent.plugins.queue_info.records import queue_records
    from edge_agent.plugins.queue_info.slurm import (
        nodes_from_scontrol,
        parse_scontrol,
        partitions_from_scontrol,
    )

    text = (FIXTURES / "slurm" / "22.05" / "scontrol_show_partition.txt").read_text().splitlines()
    text[0] += " TRESBillingWeights=CPU=2.0,Mem=0.5G"
    parts = partitions_from_scontrol(parse_scontrol("\n".join(text)))
    nodes = nodes_from_scontrol(parse_scontrol(
        (FIXTURES / "slurm" / "22.05" / "scontrol_show_node.txt").read_text()))
    queues = queue_records(parts, nodes)
    debug = queues["debug"]
    assert debug["billing_weights"] == {"CPU": 2.0, "Mem": 0.5}
    expected = (debug["cpus_per_node"] * 2.0 + debug["mem_per_node_mb"] / 1024 * 0.5) / debug["cpus_per_node"]
    assert debug["charge_factor"] == pytest.approx(expected, rel=1e-3)
    assert queues["batch"]["charge_factor"] is None and queues["batch"]["billing_weights"] is None


async def test_get_info_says_where_a_queues_charge_factor_comes_from(tmp_path, pbs_bin):
    host = PluginHost([QueueInfoPlugin], state_dir=tmp_path / "state",
                      config={"queue_info": {"backend": "pbs", "bin_dir": str(pbs_bin), "charge_factors": "gpu=4"}})
    plugin = host.plugins["queue_info"]
    sid = (await plugin.create_session(OWNER, {})).sid
    response = await plugin.handle(Request("GET", f"get_info/{sid}", caller=OWNER))
    queues = json.loads(response.body)["queues"]
    await plugin.stop()
    assert (queues["gpu"]["charge_factor"], queues["gpu"]["charge_factor_source"]) == (4.0, "site")
    assert (queues["workq"]["charge_factor"], queues["workq"]["charge_factor_source"]) == (None, None)
