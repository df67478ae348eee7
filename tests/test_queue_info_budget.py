"""Budgets (usage/{sid}): parsers and arithmetic on fixed input, and the real Slurm with
accounting, where two accounts edgebudget1/2 have a GrpTRESMins limit (made here if missing)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from datetime import date, timedelta

import pytest

from edge_agent.host import PluginHost
from edge_agent.plugin import Caller, Request
from edge_agent.plugins.queue_info.budget import burn_down, parse_limits, parse_usage, period
from edge_agent.plugins.queue_info.plugin import QueueInfoPlugin

OWNER = Caller(user="owner", uid=1, role="owner", scope="full")
ACCOUNTS = {"edgebudget1": 600, "edgebudget2": 1200}  # GrpTRESMins cpu= (minutes)

SACCT = """\
chem01|301|COMPLETED|7200|2026-11-28T08:00:00|2026-11-28T09:00:00
chem01|302|RUNNING|3600|2026-11-30T08:00:00|Unknown
chem01|303|CANCELLED by 0|0|None|2026-11-29T08:00:00
bio02|401|FAILED|36000|2026-11-29T00:00:00|2026-11-29T10:00:00
"""
SACCTMGR = """\
chem01||cpu=6000
chem01|alice|cpu=60
bio02||billing=1200
phys03||
"""


def test_usage_per_account_and_day():
    today = date(2026, 11, 30)
    usage = parse_usage(SACCT, today=today)
    assert usage["chem01"] == {date(2026, 11, 28): 2.0, today: 1.0}  # running: counted today
    assert usage["bio02"] == {date(2026, 11, 29): 10.0}


def test_limits_are_the_accounts_own_grptresmins():
    assert parse_limits(SACCTMGR) == {"chem01": 100.0, "bio02": 20.0}


def test_burn_down_with_a_period_gives_pace_and_forecast():
    today = date(2026, 11, 30)
    daily = {date(2026, 11, 28): 2.0, today: 1.0}
    made = burn_down("chem01", daily, 100.0, start=date(2026, 11, 27), end=date(2026, 12, 10), today=today)
    assert [h["used"] for h in made["history"]] == [0.0, 2.0, 2.0, 3.0]
    assert (made["used"], made["remaining"]) == (3.0, 97.0)
    assert made["pace_per_day"] == pytest.approx(9.7)
    assert made["forecast"]["rate_per_day"] == pytest.approx(3.0 / 4)
    assert made["forecast"]["used_at_end"] == pytest.approx(3.0 + 0.75 * 10)
    assert made["verdict"].startswith("3 of 100 core-hours used, 97 left; at the recent rate 90 would be left")
    assert "spending it all needs 9.7 a day" in made["verdict"]
    hungry = burn_down("bio02", {today: 30.0}, 20.0, start=today, end=today + timedelta(days=5), today=today)
    assert hungry["remaining"] == 0 and "runs out on" in hungry["verdict"]
    unlimited = burn_down("phys03", {}, None, start=today, end=None, today=today)
    assert unlimited["remaining"] is None and "no limit" in unlimited["verdict"]


def test_period_defaults_to_the_last_days():
    assert period(None, None, today=date(2026, 12, 3), days=30) == (date(2026, 11, 4), None)
    assert period("2026-01-01", "2026-12-31", today=date(2026, 12, 3), days=30) == (
        date(2026, 1, 1), date(2026, 12, 31))


# --- the real Slurm -----------------------------------------------------------------------------

def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def ensure_budget_accounts() -> None:
    """Two accounts with a core-hour limit, and root's association with them (idempotent)."""
    for account, minutes in ACCOUNTS.items():
        if account not in _run("sacctmgr", "-n", "-P", "show", "account", account, "format=account").stdout:
            _run("sacctmgr", "-i", "add", "account", account, "Description=budget tests", "Organization=edge")
        _run("sacctmgr", "-i", "modify", "account", account, "set", f"GrpTRESMins=cpu={minutes}")
        if account not in _run("sacctmgr", "-n", "-P", "show", "assoc", "where", "user=root",
                               f"account={account}", "format=account").stdout:
            _run("sacctmgr", "-i", "add", "user", "root", f"account={account}")


@pytest.fixture(scope="module")
def budget_accounts():
    ping = _run("scontrol", "ping") if _run("which", "scontrol").returncode == 0 else None
    if ping is None or "UP" not in ping.stdout:
        pytest.skip("Slurm is not running; SLURM_WITH_DBD=1 bash ../shared/scripts/slurm-up.sh")
    if _run("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster").returncode != 0:
        pytest.skip("Slurm accounting (slurmdbd) is not running")
    ensure_budget_accounts()
    return list(ACCOUNTS)


def run_jobs(*batches: tuple[str, int, int]) -> dict[str, list[str]]:
    """For each ``(account, count, seconds)``, ``count`` one-core jobs of ``seconds`` each
    charged to ``account``; all submitted at once, then waited for. Their ids by account."""
    ran: dict[str, list[str]] = {}
    for account, count, seconds in batches:
        for _ in range(count):
            out = _run("sbatch", "--parsable", "-A", account, "-p", "debug", "-n", "1", "-t", "2", "-o", "/dev/null",
                       "-J", f"budget-{uuid.uuid4().hex[:6]}", "--wrap", f"sleep {seconds}")
            assert out.returncode == 0, out.stderr
            ran.setdefault(account, []).append(out.stdout.strip().split(";")[0])
    ids = [job_id for account_ids in ran.values() for job_id in account_ids]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        states = _run("sacct", "-X", "-n", "-P", "-j", ",".join(ids), "--format=State").stdout.split()
        if len(states) == len(ids) and all(s == "COMPLETED" for s in states):
            return ran
        time.sleep(0.5)
    raise AssertionError(f"jobs {ids} did not complete: {states}")


def cpu_seconds(ids: list[str]) -> int:
    out = _run("sacct", "-X", "-n", "-P", "-j", ",".join(ids), "--format=CPUTimeRAW").stdout.split()
    return sum(int(v) for v in out)


@pytest.mark.slurm
@pytest.mark.slurmdbd
async def test_burn_down_of_two_accounts_from_the_real_accounting(tmp_path, budget_accounts):
    ran = run_jobs(("edgebudget1", 2, 2), ("edgebudget2", 1, 3))
    end = (date.today() + timedelta(days=30)).isoformat()
    host = PluginHost([QueueInfoPlugin], state_dir=tmp_path / "state",
                      config={"queue_info": {"budget_period_end": end}})
    plugin = host.plugins["queue_info"]
    sid = (await plugin.create_session(OWNER, {})).sid
    response = await plugin.handle(Request("GET", f"usage/{sid}", query="accounts=edgebudget1,edgebudget2&days=7",
                                           caller=OWNER))
    body = json.loads(response.body)
    assert response.status == 200, body
    made = {a["account"]: a for a in body["accounts"]}
    assert set(made) == set(ACCOUNTS) and body["unit"] == "core-hours"
    for account, minutes in ACCOUNTS.items():
        one = made[account]
        assert one["limit"] == minutes / 60
        # Everything these accounts ever ran this week counts; at least our own jobs.
        assert one["used"] >= cpu_seconds(ran[account]) / 3600 - 1e-3
        assert one["remaining"] == pytest.approx(one["limit"] - one["used"], abs=1e-3)
        assert one["history"][-1]["date"] == date.today().isoformat()
        assert one["history"][-1]["used"] == pytest.approx(one["used"], abs=1e-3)
        assert one["period_end"] == end and one["pace_per_day"] == pytest.approx(one["remaining"] / 30, rel=1e-3)
        assert one["forecast"]["rate_per_day"] > 0 and "used_at_end" in one["forecast"]
        assert "core-hours used" in one["verdict"]
    # Without accounts: the agent user's own associations, which include both.
    response = await plugin.handle(Request("GET", f"usage/{sid}", query="force=true", caller=OWNER))
    assert {a["account"] for a in json.loads(response.body)["accounts"]} >= set(ACCOUNTS)
    await plugin.stop()


@pytest.mark.slurm
@pytest.mark.slurmdbd
@pytest.mark.e2e
def test_sdk_reads_budgets_through_a_real_bridge(edge_setup, budget_accounts):
    from edge_agent.client import BridgeClient

    end = (date.today() + timedelta(days=10)).isoformat()
    s = edge_setup(plugins="queue_info", options=[f"queue_info.budget_period_end={end}"])
    with BridgeClient(s.bridge.url, token=s.token) as bc:
        qi = bc.get_edge_client(s.edge).get_plugin("queue_info")
        answer = qi.get_usage(["edgebudget1", "edgebudget2"], days=3)
    assert [a["account"] for a in answer["accounts"]] == ["edgebudget1", "edgebudget2"]
    assert answer["period_end"] == end and answer["accounts"][1]["limit"] == 20
    assert len(answer["accounts"][0]["history"]) == 3


@pytest.mark.slurm
@pytest.mark.slurmdbd
async def test_the_budget_watch_emits_the_agent_users_budgets_as_usage_events(tmp_path, budget_accounts):
    """What the bridge's ``allocation_low`` is derived from: the accounts with a limit, their
    use and remainder, without the day-by-day history."""
    host = PluginHost([QueueInfoPlugin], state_dir=tmp_path / "state", config={"queue_info": {"budget_watch": 0.2}})
    await host.start()
    try:
        deadline = time.monotonic() + 60
        while not any(e["topic"] == "usage" for e in host.events) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        usage = next(e for e in host.events if e["topic"] == "usage")
    finally:
        await host.stop()
    made = {a["account"]: a for a in usage["data"]["accounts"]}
    assert set(made) >= set(ACCOUNTS) and usage["plugin"] == "queue_info" and usage["owner"] is None
    for account, minutes in ACCOUNTS.items():
        assert made[account]["limit"] == minutes / 60
        assert made[account]["remaining"] == pytest.approx(max(minutes / 60 - made[account]["used"], 0), abs=1e-3)
        assert "history" not in made[account]
    assert all(a["limit"] for a in made.values())  # accounts without a limit are left out


async def test_the_budget_watch_is_off_at_zero_and_quiet_without_slurm(tmp_path):
    host = PluginHost([QueueInfoPlugin], state_dir=tmp_path / "state",
                      config={"queue_info": {"budget_watch": 0, "backend": "none"}})
    await host.start()
    assert host.plugins["queue_info"]._watcher is None
    assert await host.plugins["queue_info"].budget_summary() is None  # no scheduler: nothing to say
    await host.stop()
