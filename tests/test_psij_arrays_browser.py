"""A job array from the job form, in the real Chromium against a real bridge, agent and Slurm:
one row that expands into its tasks (live counts, per-task output), and a retry of the failed
task from there. ``RADICAL_SCREENSHOT_DIR=docs/screenshots`` refreshes the screenshot in the docs."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from tests.fixtures.psij.harness import slurm_running
from tests.test_portal_browser import (  # noqa: F401 - fixtures
    edge_path,
    expect_live,
    job_row,
    open_page,
    portal,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slurm,
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_an_array_from_the_form_expands_into_its_tasks_and_its_failed_task_is_retried(portal, open_page, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    ok, reason = slurm_running()
    if not ok:
        pytest.skip(reason)
    portal.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij"))
    expect_live(page)
    page.select_option("#psij-executor", "slurm")
    page.get_by_label("Executable").fill("/bin/sh")
    mark = tmp_path / "retried"
    page.get_by_label("Arguments").fill(
        f"-c 'i=$SLURM_ARRAY_TASK_ID; if [ $i = 2 ] && [ ! -e {mark} ]; then touch {mark}; echo no >&2; exit 3; fi; "
        "echo task $i'")
    name = f"array-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Job name").fill(name)
    page.get_by_label("Wall time").fill("00:02:00")
    page.get_by_label("Array of tasks").fill("0-4")
    expect(page.locator("#psij-cost")).to_contain_text("5 tasks \u00d7")
    page.get_by_role("button", name="Submit job").click()

    row = job_row(page, name).first
    expect(row.locator(".badge")).to_have_text("FAILED", timeout=180_000)
    expect(row.locator(".task-counts")).to_have_text("4 done · 1 failed")
    toggle = row.get_by_role("button", name="5 tasks")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    tasks = page.locator("#psij-jobs tr.detail-row")
    expect(tasks.locator("tbody tr")).to_have_count(5)
    expect(tasks.locator("tbody tr", has_text="FAILED")).to_contain_text("3")
    expect(row.get_by_role("button", name="5 tasks")).to_have_attribute("aria-expanded", "true")
    tasks.get_by_role("button", name="Output of task 4").click()
    expect(tasks.locator(".task-output")).to_contain_text("task 4")
    tasks.get_by_role("button", name="Output of task 2").click()
    expect(tasks.locator(".task-output")).to_contain_text("no")
    shots = Path(os.environ.get("RADICAL_SCREENSHOT_DIR") or tmp_path)
    page.locator("#jobs-heading").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "psij_array.png"))

    tasks.get_by_role("button", name="Retry the 1 failed task").click()
    expect(page.locator("#psij-jobs-status")).to_contain_text("Tasks 2 of job")
    expect(tasks.locator("tbody tr", has_text="retried in")).to_have_count(1)
    retry = page.locator("#psij-jobs tbody tr", has=page.get_by_role("button", name="1 task"))
    expect(retry.locator(".badge")).to_have_text("COMPLETED", timeout=180_000)
    expect(retry.locator(".task-counts")).to_have_text("1 done")
    # The retry's own page lists its task and links back to the first attempt.
    retry.get_by_role("link").first.click()
    expect(page.locator("#job-tasks tbody tr")).to_have_count(1)
    expect(page.locator("#job-tasks tbody tr")).to_contain_text("COMPLETED")
    expect(page.locator("#job-details")).to_contain_text("Retry of")
    expect(page.locator("#job-details")).to_contain_text("1 task (2)")
    # What it used, from sacct's lines of its tasks: the request per task, each task's own use.
    expect(page.locator("#job-report-source")).to_contain_text("from sacct", timeout=60_000)
    expect(page.locator("#job-report-tasks tbody tr")).to_have_count(1)
    expect(page.locator("#job-report-tasks tbody tr")).to_contain_text("COMPLETED")
    # The verdict's first sentence is capitalised; which one comes first depends on the CPU it used.
    expect(page.locator("#job-verdict")).to_contain_text(
        re.compile("(^|; )[Aa]sked for 2 min per task, the longest task ran"))
    expect(page.locator("#job-report-table")).to_contain_text("Wall time (longest task)")
