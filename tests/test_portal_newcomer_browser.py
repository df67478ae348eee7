"""The portal as a newcomer finds it (issue 14), in a real headless Chromium against a real
bridge, a real agent and (where marked) real Slurm.

Users: alice owns the edge, bob may use it ("user"), dave may only look ("viewer"), erin has
no edge yet. Every wait is on a state in the page (Playwright's expect), never on the clock.
Set RADICAL_SCREENSHOT_DIR to keep the phone-width screenshots somewhere of your choosing.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.fixtures.psij.harness import slurm_running
from tests.support.browser import PHONE, page_opener
from tests.support.live import AgentProcess, wait_for
from tests.test_portal_browser import Portal, assert_not_reloaded, expect_live, login, submit_job
from tests.test_portal_browser import mark_no_reload as _mark_no_reload

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

EDGE = "hpc-newcomer"
PLUGINS = "sysinfo,psij,queue_info,rhapsody"
UNIX_USER = getpass.getuser()
AS_ROOT = os.getuid() == 0


class Env(Portal):
    EDGE = EDGE
    PLUGINS = PLUGINS
    USERS = {"users": ["alice", "bob", "dave", "erin"], "api_tokens": ["alice", "bob"],
             "edge_tokens": [(EDGE, "alice")], "grants": [(EDGE, "bob", "user"), (EDGE, "dave", "viewer")]}

    def submit(self, user: str, spec: dict, executor: str = "local") -> str:
        with self.api(user) as api:
            sid = api.post(f"/{EDGE}/psij/register_session").json()["sid"]
            answer = api.post(f"/{EDGE}/psij/submit/{sid}", json={"job_spec": spec, "executor": executor})
            assert answer.status_code == 200, answer.text
            return answer.json()["job_id"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, sqlite_template, request):
    yield from Env.fixture(tmp_path_factory, sqlite_template, request)


@pytest.fixture
def open_page(browser, env):
    """``open_page(user, phone=False)``: a fresh context logged in as ``user``; script errors
    and CSP violations in any page fail the test."""
    with page_opener(browser, env.url, accept_downloads=True) as make:
        yield make


def edge_path(*parts: str) -> str:
    return "/".join([f"/edges/{EDGE}", *parts]) + "/"


def mark_no_reload(page) -> None:
    _mark_no_reload(page)


def dialog_button(page, name: str):
    return page.get_by_role("dialog").get_by_role("button", name=name, exact=True)


# --- 1. sharing hands over a Unix identity ------------------------------------------------------------


def test_pages_say_which_unix_account_runs_the_work_and_sharing_it_needs_a_confirmation(env, open_page):
    from playwright.sync_api import expect

    env.ensure_online()
    alice = open_page("alice")
    alice.goto(edge_path())
    expect(alice.locator("#runs-as")).to_contain_text(f"Runs as {UNIX_USER} on")
    expect(alice.locator("#runs-as")).to_contain_text("with their files and allocations")
    if AS_ROOT:  # the agent runs as root here: its owner is told loudly, on the edge and the dashboard
        expect(alice.locator("#root-warning")).to_contain_text("runs as root")
        alice.goto("/")
        expect(alice.locator("#root-edges")).to_contain_text(EDGE)
        expect(alice.locator(f'#edges tr[data-edge="{EDGE}"] .badge.root')).to_be_visible()

    alice.goto(edge_path("sharing"))
    expect(alice.locator("#share-identity")).to_contain_text(f"runs as {UNIX_USER} on")
    alice.get_by_label("Username or group name").fill("erin")
    alice.get_by_label("Role", exact=True).select_option("user")
    alice.get_by_role("button", name="Share").click()
    expect(alice.get_by_role("alert").first).to_contain_text("Confirm that you hand over this Unix account")
    alice.get_by_label(re.compile("I understand that a “user” runs programs as")).check()
    alice.get_by_role("button", name="Share").click()
    expect(alice.locator(".messages")).to_contain_text("erin is now user")
    alice.get_by_role("button", name="Remove the role of erin").click()
    dialog_button(alice, "Keep it").click()  # asked first; keeping it changes nothing
    expect(alice.locator("tbody")).to_contain_text("erin")
    alice.get_by_role("button", name="Remove the role of erin").click()
    dialog_button(alice, "Remove").click()
    expect(alice.locator(".messages")).to_contain_text("erin no longer has a role")

    # bob, a "user" of alice's edge, is told whose account he acts as, where he submits.
    bob = open_page("bob")
    bob.goto(edge_path())
    expect(bob.locator("#runs-as")).to_contain_text("this is the account of the edge's owner, alice, not your own")
    expect(bob.locator("#root-warning")).to_have_count(0)
    bob.goto(edge_path("plugins", "psij"))
    expect(bob.locator("#psij-runs-as")).to_contain_text(f"Jobs run as {UNIX_USER} on")
    expect(bob.locator("#psij-runs-as")).to_contain_text("the account of alice")
    bob.goto(edge_path("plugins", "rhapsody"))
    expect(bob.locator("#rh-runs-as")).to_contain_text(f"Tasks run as {UNIX_USER} on")


def test_every_job_shows_the_account_it_runs_as(env, open_page):
    from playwright.sync_api import expect

    env.ensure_online()
    job_id = env.submit("bob", {"executable": "/bin/true", "name": "whose-job"})
    bob = open_page("bob")
    bob.goto(edge_path("plugins", "psij"))
    row = bob.locator("#psij-jobs tbody tr", has_text="whose-job")
    expect(row.locator(".badge")).to_have_text("COMPLETED")
    expect(row).to_contain_text(f"{UNIX_USER}@")
    expect(row.get_by_role("link", name=job_id)).to_be_visible()  # full ids, as everywhere else
    bob.goto("/")
    recent = bob.locator("#recent tbody tr", has_text="whose-job")
    expect(recent).to_contain_text(f"{UNIX_USER}@")
    recent.get_by_role("link", name=job_id).click()
    expect(bob.locator("#job-details")).to_contain_text(f"Runs as{UNIX_USER} on")
    expect(bob.locator("#job-details")).to_contain_text("Submitted bybob")


# --- 3. no accidental or duplicate actions --------------------------------------------------------------


def test_cancel_asks_first_and_keeping_the_job_cancels_nothing(env, open_page):
    from playwright.sync_api import expect

    env.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij"))
    expect_live(page)
    row = submit_job(page, "/bin/sleep", "300", "keep-me")
    expect(row.locator(".badge")).to_have_text("ACTIVE")
    row.get_by_role("button", name=re.compile("Cancel job")).click()
    expect(page.get_by_role("dialog")).to_contain_text("keep-me")
    dialog_button(page, "Keep it running").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(row.locator(".badge")).to_have_text("ACTIVE")
    # Escape is "no" too.
    row.get_by_role("button", name=re.compile("Cancel job")).click()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(row.locator(".badge")).to_have_text("ACTIVE")
    # From the job's page, confirmed: it is canceled.
    row.get_by_role("link").first.click()
    expect(page.locator("#job-state")).to_have_text("ACTIVE")
    page.get_by_role("button", name="Cancel job").click()
    dialog_button(page, "Cancel job").click()
    expect(page.locator("#job-state")).to_have_text("CANCELED")


def test_a_reload_after_creating_a_token_creates_no_second_one_and_revoking_asks(env, open_page):
    from playwright.sync_api import expect

    page = open_page("dave")
    page.goto("/tokens/")
    page.get_by_label("Label").fill("reload-test")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token")).to_have_value(re.compile(r"^rda_"))
    assert re.search(r"/tokens/$", page.url)  # the page after the redirect, not the POST's answer
    rows = page.locator("tbody tr", has_text="reload-test")
    expect(rows).to_have_count(1)
    page.reload()
    expect(page.locator("#new-token")).to_have_count(0)
    expect(rows).to_have_count(1)
    rows.get_by_role("button", name=re.compile("Revoke")).click()
    dialog_button(page, "Keep it").click()
    expect(rows.locator(".badge")).to_have_text("active")
    rows.get_by_role("button", name=re.compile("Revoke")).click()
    dialog_button(page, "Revoke").click()
    expect(page.locator(".messages")).to_contain_text("is revoked")
    expect(rows.locator(".badge")).to_have_text("revoked")


# --- 5. dead ends: add an edge yourself ------------------------------------------------------------------


def test_a_newcomer_adds_an_edge_copies_the_command_and_sees_it_come_online(env, open_page, browser):
    from playwright.sync_api import expect

    page = open_page("erin")
    expect(page.locator("#no-edges")).not_to_contain_text("manage.py")
    page.locator("#no-edges").get_by_role("link", name="Add an edge").click()
    name = f"erin-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Edge name").fill(name)
    page.get_by_role("button", name="Add edge and issue its token").click()
    expect(page.get_by_role("heading", name=f"Connect an agent to {name}")).to_be_visible()
    token = page.locator("#new-edge-token").input_value()
    assert token.startswith("rde_")
    command = page.locator("#cmd-run").text_content()
    assert command.startswith(f"radical-edge-service --url {env.url} --token-file ~/.radical/edge.token")
    page.get_by_role("button", name="Copy token").click()
    expect(page.locator("[data-copy-status]").first).to_have_text(re.compile(r"Copied|Selected"))
    page.reload()
    expect(page.locator("#new-edge-token")).to_have_count(0)  # shown once

    page.goto("/")
    row = page.locator(f'#edges tr[data-edge="{name}"]')
    expect(row.locator(".edge-state")).to_have_text("offline")
    mark_no_reload(page)
    agent = AgentProcess(env.url, token, env.var, plugins="sysinfo").start()
    env.agents.append(agent)  # stopped with the module's
    expect(row.locator(".edge-state")).to_have_text("online")
    assert_not_reloaded(page)

    # An offline edge's pages say there is no data, not that there is nothing.
    agent.stop()
    expect(row.locator(".edge-state")).to_have_text("offline")
    page.goto(f"/edges/{name}/plugins/sysinfo/")
    expect(page.locator("#sysinfo-gpus tbody")).to_contain_text("No data while the edge is offline")
    expect(page.locator("#sysinfo-disks tbody")).to_contain_text("No data while the edge is offline")
    expect(page.locator("#sysinfo-gpus tbody")).not_to_contain_text("No GPUs found")


# --- 6, 7. results that do not drift, words a newcomer understands --------------------------------------


def test_a_dashboard_task_link_opens_that_task(env, open_page):
    from playwright.sync_api import expect

    env.ensure_online()
    with env.api("alice") as api:
        sid = api.post(f"/{EDGE}/rhapsody/register_session", json={"backends": ["concurrent"]}).json()["sid"]
        api.post(f"/{EDGE}/rhapsody/submit/{sid}", json={"tasks": [{"function": "noop", "name": "linked-task"}]})
    page = open_page("alice")
    row = page.locator("#recent tbody tr", has_text="linked-task")
    expect(row.locator(".badge")).to_have_text("DONE")
    uid = row.locator("a.mono").text_content()
    row.locator("a.mono").click()
    expect(page.locator("#rh-detail-panel")).to_be_visible()
    expect(page.locator("#rh-detail-uid")).to_have_text(uid)
    expect(page.locator("#rh-detail")).to_contain_text(f"{UNIX_USER} on")


def test_tasks_stay_on_the_dashboard_after_an_agent_restart(env, open_page):
    from playwright.sync_api import expect

    env.ensure_online()
    with env.api("alice") as api:
        sid = api.post(f"/{EDGE}/rhapsody/register_session", json={"backends": ["concurrent"]}).json()["sid"]
        uid = api.post(f"/{EDGE}/rhapsody/submit/{sid}", json={"tasks": [
            {"executable": "/bin/echo", "arguments": ["survives restarts"], "name": "kept-task"}]}).json()[0]["uid"]
        wait_for(lambda: api.get(f"/{EDGE}/rhapsody/task/{sid}/{uid}").json()["state"] == "DONE", 30,
                 what="task done")
    env.agent.stop()
    env.agent.start()  # a new agent process on the same state directory: the session is gone, the record is not
    wait_for(lambda: env.bridge.edge_online(env.tokens["alice"], EDGE), 30, what="edge online again")
    page = open_page("alice")
    row = page.locator("#recent tbody tr", has_text="kept-task")
    expect(row.locator(".badge")).to_have_text("DONE")
    row.get_by_role("link", name=uid).click()
    expect(page.locator("#rh-detail-uid")).to_have_text(uid)
    expect(page.locator("#rh-detail")).to_contain_text("From the task history")
    expect(page.locator("#rh-detail")).to_contain_text("survives restarts")


def test_a_viewer_is_not_told_to_use_a_form_they_cannot_use(env, open_page):
    from playwright.sync_api import expect

    env.ensure_online()
    page = open_page("dave")
    page.goto(edge_path("plugins", "psij"))
    expect(page.get_by_role("button", name="Submit job")).to_be_disabled()
    expect(page.locator("#psij-jobs tbody")).to_contain_text("No jobs that you may see")
    expect(page.locator("#psij-jobs tbody")).not_to_contain_text("form above")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Batch jobs (PSI/J)")


# --- 8. long output and the job page -------------------------------------------------------------------


def test_a_long_output_can_be_paged_from_its_start_and_downloaded_and_the_job_submitted_again(env, open_page):
    from playwright.sync_api import expect

    env.ensure_online()
    # 2.6 MiB of numbered lines: more than the page keeps of a stream.
    script = "i=0; while [ $i -lt 120000 ]; do printf 'line %07d of the long output\\n' $i; i=$((i+1)); done"
    job_id = env.submit("alice", {"executable": "/bin/sh", "arguments": ["-c", script], "name": "long-output"})
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij", "jobs", job_id))
    expect(page.locator("#job-state")).to_have_text("COMPLETED", timeout=120_000)
    expect(page.locator("#stdout-size")).to_have_text(re.compile(r"MiB"))
    expect(page.locator("#job-stdout")).to_contain_text("line 0119999")
    expect(page.locator("#job-details")).to_contain_text("Elapsed")
    start = page.locator('[data-page-stream="stdout"]')
    expect(start).to_be_visible()
    start.click()
    expect(page.locator("#stdout-pager")).to_contain_text("Bytes 0\u2013")
    expect(page.locator("#job-stdout")).to_contain_text("line 0000000 of the long output")
    page.locator("#stdout-pager").get_by_role("button", name="Next page").click()
    expect(page.locator("#stdout-pager")).to_contain_text(re.compile("Bytes 262,144\u2013"))
    with page.expect_download() as info:
        page.locator('[data-download-stream="stdout"]').click()
    data = Path(info.value.path()).read_text()
    assert data.startswith("line 0000000") and data.endswith("line 0119999 of the long output\n")
    assert data.count("\n") == 120000

    page.get_by_role("link", name="Submit again").click()
    expect(page.locator("#psij-executable")).to_have_value("/bin/sh")
    expect(page.locator("#psij-name")).to_have_value("long-output")
    expect(page.locator("#psij-submit-status")).to_contain_text(f"request of job {job_id}")


# --- 4. phone width ---------------------------------------------------------------------------------------


# Elements that stick out of the screen (not counting those inside a box that scrolls).
_OVERFLOWING = """() => [...document.querySelectorAll('body *')].filter((el) => {
  const r = el.getBoundingClientRect();
  if (r.right <= 391) return false;
  for (let p = el.parentElement; p; p = p.parentElement) {
    if (['auto', 'scroll'].includes(getComputedStyle(p).overflowX)) return false;
  }
  return true;
}).slice(0, 8).map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className} `
  + `(${Math.round(el.getBoundingClientRect().right)} px)`)"""


def _fits(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], (f"{page.url} is {width} px wide at {PHONE['width']} px: "
                                     f"{page.evaluate(_OVERFLOWING)}")


def _within_screen(locator) -> None:
    box = locator.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, box


def test_every_page_is_usable_at_phone_width(env, open_page, tmp_path):
    from playwright.sync_api import expect

    env.ensure_online()
    shots = Path(os.environ.get("RADICAL_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    job_id = env.submit("alice", {"executable": "/bin/echo", "arguments": ["phone"], "name": "phone-job"})
    page = open_page("alice", phone=True)

    # The header collapses behind a menu button; opened, the account and Log out are on screen.
    expect(page.locator(".signed-in")).to_be_hidden()
    _fits(page)
    page.screenshot(path=str(shots / "phone_dashboard.png"), full_page=True)
    page.get_by_role("button", name="Menu").click()
    expect(page.locator(".signed-in")).to_be_visible()
    _within_screen(page.get_by_role("button", name="Log out"))
    _within_screen(page.locator(".signed-in"))
    page.screenshot(path=str(shots / "phone_menu.png"))
    page.get_by_role("button", name="Menu").click()

    # The dashboard's tables keep each row's state on screen.
    recent = page.locator("#recent tbody tr", has_text="phone-job")
    expect(recent.locator(".badge")).to_have_text("COMPLETED")
    _within_screen(recent.locator(".badge"))
    _within_screen(page.locator(f'#edges tr[data-edge="{EDGE}"] .edge-state .badge'))

    pages = {
        "edge": edge_path(), "sysinfo": edge_path("plugins", "sysinfo"), "queues": edge_path("plugins", "queue_info"),
        "psij": edge_path("plugins", "psij"), "job": edge_path("plugins", "psij", "jobs", job_id),
        "rhapsody": edge_path("plugins", "rhapsody"), "tokens": "/tokens/", "sharing": edge_path("sharing"),
        "connect": edge_path("connect"), "add_edge": "/edges/new/",
    }
    for name, path in pages.items():
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        if name == "psij":
            row = page.locator("#psij-jobs tbody tr", has_text="phone-job")
            expect(row.locator(".badge")).to_have_text("COMPLETED")
            _within_screen(row.locator(".badge"))
        if name == "job":
            expect(page.locator("#job-state")).to_have_text("COMPLETED")
            expect(page.locator("#job-stdout")).to_contain_text("phone")
        if name == "sysinfo":
            expect(page.locator('#sysinfo-figures [data-figure="cpu"] .value')).to_be_visible()
        if name == "queues":
            expect(page.locator("#qi-meta")).not_to_have_text("Asking the scheduler…")
        _fits(page)
        page.screenshot(path=str(shots / f"phone_{name}.png"), full_page=True)


# --- 2. why a job waits or failed (real Slurm) -------------------------------------------------------------


def _slurm_or_skip() -> None:
    ok, reason = slurm_running()
    if not ok:
        pytest.skip(reason)


@pytest.mark.slurm
@pytest.mark.slurm_alone  # the pending reason a scheduling pass gives
def test_a_request_over_the_partition_limit_is_warned_and_its_pending_reason_explained(env, open_page):
    from playwright.sync_api import expect

    _slurm_or_skip()
    env.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij"))
    expect_live(page)
    expect(page.locator('#psij-executor option[value="slurm"]')).to_be_enabled()
    page.select_option("#psij-executor", "slurm")
    expect(page.locator('#psij-queue option[value="debug"]')).to_be_attached()
    page.select_option("#psij-queue", "debug")  # 30 minutes at most
    page.get_by_label("Wall time").fill("02:00:00")
    warning = page.locator("#psij-limit-warning")
    expect(warning).to_contain_text("longer than the 30 min 0 s limit of partition debug")
    page.get_by_label("Wall time").fill("00:10:00")
    expect(warning).to_have_count(0)
    page.get_by_label("Wall time").fill("02:00:00")
    page.get_by_label("Executable").fill("/bin/true")
    name = f"too-long-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Job name").fill(name)
    page.get_by_role("button", name="Submit job").click()
    expect(page.get_by_role("dialog")).to_contain_text("exceeds the limits")
    dialog_button(page, "Change the request").click()
    expect(page.locator("#psij-jobs tbody")).not_to_contain_text(name)
    page.get_by_role("button", name="Submit job").click()
    dialog_button(page, "Submit anyway").click()
    row = page.locator("#psij-jobs tbody tr", has_text=name)
    expect(row.locator(".badge")).to_have_text("QUEUED")
    native_id = row.locator("td").nth(4).text_content().strip()
    row.get_by_role("link").first.click()
    reason = page.locator("#job-pending-reason")
    expect(reason).to_contain_text("longer than the partition allows")
    expect(reason).to_contain_text("PartitionTimeLimit")

    # The queue page explains the same reason and links the row to this job's page.
    job_url = page.url
    page.get_by_role("link", name="Queues & allocations").click()
    # The edge caches job lists for a few seconds; a person who just submitted refreshes.
    page.locator("#qi-force").click()
    queue_row = page.locator("#qi-jobs tbody tr", has_text=native_id)
    expect(queue_row).to_contain_text("longer than the partition allows")
    queue_row.get_by_role("link", name=native_id).click()
    expect(page).to_have_url(job_url)
    page.get_by_role("button", name="Cancel job").click()
    dialog_button(page, "Cancel job").click()
    expect(page.locator("#job-state")).to_have_text("CANCELED")


@pytest.mark.slurm
def test_a_batch_job_that_fails_at_start_shows_what_the_scheduler_and_psij_know(env, open_page):
    from playwright.sync_api import expect

    _slurm_or_skip()
    env.ensure_online()
    job_id = env.submit("alice", {"executable": "/no/such/program", "name": "fails-at-start",
                                  "attributes": {"queue_name": "debug", "duration": 60}}, executor="slurm")
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij", "jobs", job_id))
    expect(page.locator("#job-state")).to_have_text("FAILED", timeout=120_000)
    why = page.locator("#job-failure")
    expect(why).to_contain_text("Why it failed")
    expect(why.locator("#job-stderr-tail")).to_contain_text("/no/such/program")
    expect(why).to_contain_text("Exit code 127")
    expect(why).to_contain_text("Where output went")
    expect(why).to_contain_text(re.compile(r"The scheduler (says|no longer lists)"))
    expect(why).not_to_contain_text("_PSI_J_")  # psij's markers are not shown as if they meant something


@pytest.mark.slurm
def test_the_queue_page_refreshes_by_itself_and_shows_its_age(env, open_page):
    from playwright.sync_api import expect

    _slurm_or_skip()
    env.ensure_online()
    page = open_page("alice")
    page.clock.install()  # the page's timers on a clock the test can move: no 30 s wait for the refresh
    page.goto(edge_path("plugins", "queue_info"))
    expect(page.locator("#qi-auto-note")).to_contain_text("refresh by themselves every 30 s")
    expect(page.locator("#qi-queues-meta time")).to_be_visible()
    mark_no_reload(page)
    name = f"sbatch-{uuid.uuid4().hex[:6]}"
    out = subprocess.run(["sbatch", "--parsable", "-p", "debug", "-t", "5", "-J", name, "--wrap", "sleep 120",
                          "-o", "/dev/null"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    native = out.stdout.strip().split(";")[0]
    try:
        # The edge caches job lists for a few seconds: wait until the list the page's refresh
        # will get (no force, every user, default states) has the job, then let 30 s pass.
        with env.api("alice") as api:
            sid = api.post(f"/{EDGE}/queue_info/register_session").json()["sid"]
            wait_for(lambda: native in {j["job_id"] for j in api.get(
                f"/{EDGE}/queue_info/list_jobs/{sid}", params={"user": "", "state": ""}).json()["jobs"]},
                30, interval=0.5, what="the job in the edge's cached list")
        page.clock.fast_forward(30_000)
        expect(page.locator("#qi-jobs tbody tr", has_text=name)).to_be_visible()
        assert_not_reloaded(page)
    finally:
        subprocess.run(["scancel", native], timeout=30)


# --- 9. admin pages ----------------------------------------------------------------------------------------


def test_admins_filter_proxied_calls_and_wide_lists_fit_the_window(env, browser):
    from playwright.sync_api import expect

    env.ensure_online()
    env.bridge.create_user("siteadmin", superuser=True)
    with env.api("alice") as api:  # a program's call, among the portal's own
        api.get(f"/{EDGE}/sysinfo/version")
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=env.url)
    try:
        page = context.new_page()
        login(page, "siteadmin")
        page.goto("/admin/bridge_app/callrecord/")
        expect(page.locator("#result_list")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400  # nothing cut off at the right
        page.locator("#changelist-filter").get_by_role("link", name="programs (API token)").click()
        rows = page.locator("#result_list tbody tr")
        expect(rows.first).to_contain_text("API token")
        assert all("portal" not in text for text in rows.locator("td.field-via").all_text_contents())
        page.locator("#changelist-filter").get_by_role("link", name="the portal (browser session)").click()
        expect(rows.first.locator("td.field-via")).to_have_text("portal")
    finally:
        context.close()
