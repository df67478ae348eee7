"""A finished Slurm job's report on its page, and the recent jobs by waste, in the real Chromium
against a real bridge, agent and Slurm with accounting. ``RADICAL_SCREENSHOT_DIR=docs/screenshots``
refreshes the screenshots in the docs."""

from __future__ import annotations

import os
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.fixtures.psij.harness import slurm_enforces_accounts, slurm_running
from tests.test_portal_browser import EDGE, Portal, edge_path, open_page  # noqa: F401 - fixtures
from tests.test_queue_info_budget import ACCOUNTS, ensure_budget_accounts, run_jobs

PERIOD_END = (date.today() + timedelta(days=20)).isoformat()


class BudgetPortal(Portal):
    """The portal's bridge and edge, with an allocation period ending in 20 days."""

    OPTIONS = ["psij.poll_interval=1", f"queue_info.budget_period_end={PERIOD_END}"]
    USERS = {**Portal.USERS, "grants": [(EDGE, "bob", "user")]}


@pytest.fixture(scope="module")
def portal(tmp_path_factory, sqlite_template, request):
    # The budget accounts exist before the edge first reads root's associations and usage:
    # it caches them for a minute (queue_info ttl_allocations), and a list from before the
    # accounts were made left the budget test without their charts.
    if slurm_running()[0] and slurm_enforces_accounts()[0]:
        ensure_budget_accounts()
    yield from BudgetPortal.fixture(tmp_path_factory, sqlite_template, request)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slurm, pytest.mark.slurmdbd,
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

GIB = 1 << 30
HOG = "import time; a = bytearray(150 << 20); a[::4096] = b'x' * len(a[::4096]); time.sleep(3)"


def test_the_job_page_says_what_a_finished_job_used_and_the_waste_list_ranks_it(portal, open_page, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    for check in (slurm_running, slurm_enforces_accounts):
        ok, reason = check()
        if not ok:
            pytest.skip(reason)
    portal.ensure_online()
    name = f"report-{uuid.uuid4().hex[:6]}"
    with portal.api("alice") as api:
        sid = api.post(f"/{EDGE}/psij/register_session").json()["sid"]
        job = api.post(f"/{EDGE}/psij/submit/{sid}", json={"executor": "slurm", "job_spec": {
            "executable": "/usr/bin/python3", "arguments": ["-c", HOG], "name": name,
            "attributes": {"queue_name": "debug", "account": "proj1", "duration": 600},
            "resources": {"memory": 4 * GIB}, "custom_attributes": {"slurm.acctg-freq": "task=1"}}})
        assert job.status_code == 200, job.text
        job_id = job.json()["job_id"]
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij", "jobs", job_id))
    # The report appears by itself once the job has ended (a live state change, no reload).
    expect(page.locator("#job-state .badge")).to_have_text("COMPLETED", timeout=180_000)
    verdict = page.locator("#job-verdict")
    expect(verdict).to_contain_text("Asked for 4 GB, peaked at ")
    expect(verdict).to_contain_text("asked for 10 min, ran ")
    expect(page.locator("#job-report-source")).to_contain_text("from sacct")
    table = page.locator("#job-report-table")
    expect(table).to_contain_text("Memory peak")
    expect(table).to_contain_text("of 4.0 GiB")
    expect(table).to_contain_text("code 0")
    expect(table.get_by_role("meter").first).to_be_visible()
    shots = Path(os.environ.get("RADICAL_SCREENSHOT_DIR") or tmp_path)
    page.screenshot(path=str(shots / "psij_job_report.png"), full_page=True)

    page.goto(edge_path("plugins", "psij"))
    page.get_by_role("button", name="Show").click()
    row = page.locator("#psij-waste tbody tr", has_text=job_id)
    expect(row).to_contain_text("of 4.0 GiB")
    expect(row).to_contain_text("asked for 4 GB")
    page.locator("#waste-heading").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "psij_jobs_by_waste.png"))


def test_a_pipeline_shows_what_waits_for_what_with_live_states(portal, open_page, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    ok, reason = slurm_running()
    if not ok:
        pytest.skip(reason)
    portal.ensure_online()
    tag = uuid.uuid4().hex[:6]
    with portal.api("alice") as api:
        sid = api.post(f"/{EDGE}/psij/register_session").json()["sid"]

        def submit(spec):
            answer = api.post(f"/{EDGE}/psij/submit/{sid}", json={"executor": "slurm", "job_spec": spec})
            assert answer.status_code == 200, answer.text
            return answer.json()["job_id"]

        a = submit({"executable": "/bin/sh", "arguments": ["-c", "sleep 1; exit 3"], "name": f"pipe-a-{tag}"})
        b = submit({"executable": "/bin/true", "name": f"pipe-b-{tag}", "after": {"succeeded": [a]}})
        submit({"executable": "/bin/true", "name": f"pipe-c-{tag}", "after": {"failed": [a]}})
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij", "jobs", a))
    pipeline = page.locator("#job-pipeline-list")
    expect(pipeline.locator("li.downstream", has_text=f"pipe-b-{tag}")).to_contain_text("starts once this job succeeds")
    # Live: A fails, C (after a failure) runs to its end, B keeps waiting; no reload.
    expect(page.locator("#job-state .badge")).to_have_text("FAILED", timeout=180_000)
    expect(pipeline.locator("li.downstream", has_text=f"pipe-c-{tag}").locator(".badge")).to_have_text(
        "COMPLETED", timeout=180_000)
    expect(pipeline.locator("li.downstream", has_text=f"pipe-b-{tag}").locator(".badge")).to_have_text("QUEUED")
    shots = Path(os.environ.get("RADICAL_SCREENSHOT_DIR") or tmp_path)
    page.locator("#job-pipeline").screenshot(path=str(shots / "psij_pipeline.png"))
    page.goto(edge_path("plugins", "psij", "jobs", b))
    expect(page.locator("#job-pipeline-list li.upstream")).to_contain_text(f"pipe-a-{tag}")
    expect(page.locator("#job-pipeline-list li.upstream .badge")).to_have_text("FAILED")
    expect(page.locator("#job-why")).to_contain_text("can never satisfy", timeout=60_000)
    page.get_by_role("button", name="Cancel job").click()
    page.get_by_role("button", name="Cancel job").last.click()
    expect(page.locator("#job-state .badge")).to_have_text("CANCELED", timeout=60_000)
    # "Run a job after this one" fills the form with the dependency.
    page.get_by_role("link", name="Run a job after this one").click()
    expect(page.locator("#psij-after")).to_have_value(b)
    expect(page.locator("#psij-executor")).to_have_value("slurm")


def test_budgets_burn_down_for_two_accounts_and_the_form_warns_past_what_remains(portal, open_page, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    for check in (slurm_running, slurm_enforces_accounts):
        ok, reason = check()
        if not ok:
            pytest.skip(reason)
    ensure_budget_accounts()
    run_jobs(("edgebudget1", 1, 2), ("edgebudget2", 1, 2))
    portal.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "queue_info"))
    for account, minutes in ACCOUNTS.items():
        figure = page.locator(f'.burndown-figure[data-account="{account}"]')
        expect(figure).to_contain_text(f"of {minutes // 60} core-hours used")
        for series in ("used", "limit", "pace", "forecast"):
            expect(figure.locator(f'polyline[data-series="{series}"]')).to_have_count(1)
    expect(page.locator("#qi-budget-meta")).to_contain_text(PERIOD_END)
    shots = Path(os.environ.get("RADICAL_SCREENSHOT_DIR") or tmp_path)
    page.locator("#budget-heading").scroll_into_view_if_needed()
    page.locator("#qi-budgets").screenshot(path=str(shots / "queue_info_budgets.png"))

    # The job form: what a job would cost at most, and a warning past what the account has left.
    page.goto(edge_path("plugins", "psij"))
    page.select_option("#psij-executor", "slurm")
    expect(page.locator('#psij-account option[value="edgebudget1"]')).to_be_attached()
    page.select_option("#psij-queue", "batch")
    page.select_option("#psij-account", "edgebudget1")
    page.get_by_label("Wall time").fill("00:10:00")
    expect(page.locator("#psij-cost")).to_contain_text("At most")
    expect(page.locator("#psij-cost")).to_contain_text("account edgebudget1 has")
    expect(page.locator("#psij-limit-warning")).to_have_count(0)
    page.get_by_label("Wall time").fill("1-00:00:00")
    expect(page.locator("#psij-limit-warning")).to_contain_text("more than the")
    expect(page.locator("#psij-limit-warning")).to_contain_text("account edgebudget1 has left")


def test_a_template_saved_and_shared_by_alice_is_loaded_and_submitted_by_bob(portal, open_page):  # noqa: F811
    from playwright.sync_api import expect

    portal.ensure_online()
    tag = uuid.uuid4().hex[:6]
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij"))
    expect(page.locator("#psij-executor")).to_have_value("local")
    page.get_by_label("Executable").fill("/bin/echo")
    page.get_by_label("Arguments").fill(f"from-template-{tag}")
    page.get_by_label("Job name").fill(f"tpl-{tag}")
    page.locator("#psij-template-name").fill(f"echo-{tag}")
    page.locator("#psij-template-shared").check()
    page.get_by_role("button", name="Save as template").click()
    expect(page.locator("#psij-submit-status")).to_contain_text("shared with everyone")

    bob = open_page("bob")
    bob.goto(edge_path("plugins", "psij"))
    option = bob.locator("#psij-template option", has_text=f"echo-{tag}")
    expect(option).to_contain_text("shared by alice")
    bob.select_option("#psij-template", option.get_attribute("value"))
    expect(bob.locator("#psij-template-delete")).to_be_hidden()  # not his to delete
    bob.get_by_role("button", name="Load").click()
    expect(bob.locator("#psij-executable")).to_have_value("/bin/echo")
    expect(bob.locator("#psij-name")).to_have_value(f"tpl-{tag}")
    bob.get_by_role("button", name="Submit job").click()
    row = bob.locator("#psij-jobs tbody tr", has_text=f"tpl-{tag}")
    expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=60_000)
    expect(row).to_contain_text("bob")
