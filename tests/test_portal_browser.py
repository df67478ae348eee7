"""The portal in a real headless Chromium, against a real bridge and a real agent.

One bridge and one agent serve the whole module (they start once; the agent is started by
the test that watches the edge come online). Users: alice owns the edge, bob may use it
("user" role), dave may only look ("viewer"), carol has no access at all. Every wait is on a
state in the page (Playwright's expect), never on the clock.
"""

from __future__ import annotations

import re
import shlex
import uuid

import httpx
import pytest

from tests.fixtures.psij.harness import slurm_enforces_accounts, slurm_running
from tests.plugins.portal_demo import XSS_IMG, XSS_SCRIPT
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, _playwright, login, page_opener  # noqa: F401 - for other modules  # noqa: F401 - login: for other modules
from tests.support.live import PASSWORD, AgentProcess, ModuleSite, wait_for  # noqa: F401 - PASSWORD: same

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

EDGE = "hpc-portal"
PLUGINS = ",".join(["sysinfo", "psij", "queue_info", "rhapsody", "tests.plugins.portal_demo:ScratchPlugin",
                    "tests.plugins.portal_demo:HostilePlugin", "tests.plugins.portal_demo:HostileNamePlugin"])


class Portal(ModuleSite):
    """The module's bridge, its users and tokens, and the edge's agent."""

    EDGE = EDGE
    PLUGINS = PLUGINS
    OPTIONS = ["psij.poll_interval=1"]
    USERS = {"users": ["alice", "bob", "carol", "dave"], "api_tokens": ["alice", "bob"],
             "edge_tokens": [(EDGE, "alice")], "grants": [(EDGE, "bob", "user"), (EDGE, "dave", "viewer")]}
    agent: AgentProcess | None = None

    @classmethod
    def fixture(cls, tmp_path_factory, sqlite_template, request):
        """The module-scoped fixture's body: the site, closed after the module's tests."""
        site = cls(request, tmp_path_factory.mktemp("portal"), template=sqlite_template, **cls.USERS)
        yield site
        site.close()

    def start_agent(self) -> AgentProcess:
        self.agent = self.agent_for(self.EDGE, plugins=self.PLUGINS, options=self.OPTIONS)
        return self.agent

    def ensure_online(self) -> None:
        if self.agent is None or self.agent.proc.poll() is not None:
            self.start_agent()
        self.wait_online(self.EDGE, "alice")


@pytest.fixture(scope="module")
def portal(tmp_path_factory, sqlite_template, request):
    yield from Portal.fixture(tmp_path_factory, sqlite_template, request)


@pytest.fixture
def open_page(browser, portal):
    """``open_page(user)``: a fresh browser context logged in as ``user``. Uncaught script
    errors and anything the Content Security Policy blocked, in any page, fail the test."""
    with page_opener(browser, portal.url) as make:
        yield make


def mark_no_reload(page) -> None:
    """Put a marker in the page's window; it survives only if the page is never reloaded."""
    page.evaluate("window.__noReload = 'still here'")


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__noReload") == "still here", "the page was reloaded"


def expect_live(page) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#live-status")).to_have_text("Live")


def edge_path(*parts: str) -> str:
    return "/".join([f"/edges/{EDGE}", *parts]) + "/"


def job_row(page, text: str):
    return page.locator("#psij-jobs tbody tr", has_text=text)


def submit_job(page, executable: str, arguments: str = "", name: str = ""):
    """Fill in the psij page's submit form and submit it; returns the job's row (by name)."""
    page.get_by_label("Executable").fill(executable)
    if arguments:
        page.get_by_label("Arguments").fill(arguments)
    if name:
        page.get_by_label("Job name").fill(name)
    page.get_by_role("button", name="Submit job").click()
    return job_row(page, name)


# --- logging in, and an edge coming online ---------------------------------------------------


def test_log_in_and_watch_the_edge_come_online_without_reloading(portal, open_page):
    from playwright.sync_api import expect

    page = open_page(None)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("did not match")

    login(page, "alice")
    expect_live(page)
    row = page.locator(f'#edges tr[data-edge="{EDGE}"]')
    expect(row.locator(".edge-state")).to_have_text("offline")
    expect(row.locator(".edge-plugins")).to_contain_text("none announced")
    mark_no_reload(page)

    portal.start_agent()
    expect(row.locator(".edge-state")).to_have_text("online")
    # Plugins by their titles, not their internal names (issue 14).
    expect(row.locator(".edge-plugins")).to_contain_text("Batch jobs")
    expect(row.locator(".edge-host")).to_have_text(re.compile(r"\w"))
    expect(row.locator(".edge-seen")).to_contain_text(re.compile(r"ago|just now"))
    assert_not_reloaded(page)

    row.get_by_role("link", name=f"Open {EDGE}").click()
    expect(page.get_by_role("heading", name="Host")).to_be_visible()
    expect(page.locator("#host-facts")).to_contain_text("Runs as")
    expect(page.locator("#edge-state")).to_have_text("online")
    tabs = page.get_by_role("navigation", name=f"Plugins of {EDGE}")
    for title in ("System info", "Queues & allocations", "Batch jobs (PSI/J)", "Rhapsody tasks", "Scratch space"):
        expect(tabs.get_by_role("link", name=title)).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.goto(edge_path())
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next="))


# --- sysinfo ------------------------------------------------------------------------------------


def test_sysinfo_shows_the_hosts_metrics_as_figures_tables_and_a_chart(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "sysinfo"))
    figures = page.locator("#sysinfo-figures")
    expect(figures.locator('[data-figure="cpu"] .value')).to_have_text(re.compile(r"^\d+(\.\d)? %$"))
    expect(figures.locator('[data-figure="memory"] .detail')).to_contain_text("used of")
    memory_meter = figures.locator('[data-figure="memory"] [role="meter"]')
    expect(memory_meter).to_have_attribute("aria-valuenow", re.compile(r"^\d+$"))
    expect(page.locator("#sysinfo-disks tbody tr").first).to_contain_text("/")
    expect(page.locator("#sysinfo-network tbody")).to_contain_text("lo")
    expect(page.locator("#sysinfo-gpus tbody")).to_contain_text("No GPUs found")
    expect(page.locator("#sysinfo-cpu")).to_contain_text("Per core")
    expect(page.locator("#sysinfo-history svg")).to_have_attribute("aria-label", re.compile(r"\d+ samples"))
    # Refresh now takes another sample: the chart grows and rates appear.
    page.get_by_role("button", name="Refresh now").click()
    expect(page.locator("#sysinfo-history svg")).to_have_attribute("aria-label", re.compile(r"([2-9]|\d\d) samples"))
    expect(page.locator("#sysinfo-history polyline").first).to_be_attached()
    expect(page.locator("#sysinfo-network tbody tr").first.locator("td").nth(8)).to_contain_text("/s")
    # Sorting the disks by size and the network by interface name works from the keyboard.
    header = page.locator("#sysinfo-network th", has_text="Interface")
    header.get_by_role("button").focus()
    page.keyboard.press("Enter")
    expect(header).to_have_attribute("aria-sort", "descending")
    # Auto-refresh takes samples by itself.
    page.select_option("#sysinfo-interval", "2")
    expect(page.locator("#sysinfo-history svg")).to_have_attribute("aria-label", re.compile(r"([3-9]|\d\d) samples"))


# --- psij: a local job, followed live, its output tailed ------------------------------------------


def test_a_local_job_runs_to_completed_live_and_its_output_is_tailed(portal, open_page, tmp_path):
    from playwright.sync_api import expect

    portal.ensure_online()
    release = tmp_path / "release"
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij"))
    expect_live(page)
    mark_no_reload(page)
    expect(page.locator("#psij-executor")).to_have_value("local")
    expect(page.locator("#psij-queue")).to_be_disabled()  # scheduler settings do not apply to local jobs
    page.get_by_label("Executable").fill("/bin/sh")
    script = f"echo first line; echo to stderr >&2; while [ ! -e {release} ]; do sleep 0.1; done; echo second line"
    page.get_by_label("Arguments").fill(f"-c '{script}'")
    page.get_by_label("Job name").fill("tail-me")
    page.get_by_label("Environment").fill("GREETING=hello")
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#psij-submit-status")).to_contain_text("Job submitted")
    row = job_row(page, "tail-me")
    expect(row.locator(".badge")).to_have_text("ACTIVE")

    # The job page tails the output while the job runs.
    page.locator("#psij-submit-status a").click()
    expect(page.locator("#job-state")).to_have_text("ACTIVE")
    expect(page.locator("#job-stdout")).to_contain_text("first line")
    expect(page.locator("#job-stderr")).to_contain_text("to stderr")
    assert page.locator("#job-stdout").text_content() == "first line\n"
    expect(page.locator("#job-details")).to_contain_text("tail-me")
    mark_no_reload(page)
    release.write_text("go")
    expect(page.locator("#job-state")).to_have_text("COMPLETED")
    expect(page.locator("#job-stdout")).to_contain_text("second line")
    assert page.locator("#job-stdout").text_content() == "first line\nsecond line\n"
    expect(page.locator("#job-history")).to_contain_text("QUEUED")
    expect(page.locator("#job-history")).to_contain_text("exit code 0")
    expect(page.locator("#job-cancel")).to_be_hidden()
    assert_not_reloaded(page)

    page.get_by_role("link", name="All jobs").click()
    expect(job_row(page, "tail-me").locator(".badge")).to_have_text("COMPLETED")


def test_a_bad_submit_is_explained_and_leaves_no_job(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij"))
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#psij-executable")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#psij-executable-error")).to_contain_text("Name the program")
    page.get_by_label("Executable").fill("/no/such/program")
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#psij-submit-status")).to_contain_text("was not submitted")
    expect(page.locator("#psij-submit-status")).to_contain_text("/no/such/program")
    expect(page.locator("#psij-jobs tbody")).not_to_contain_text("/no/such/program")


def test_cancel_a_running_job_from_the_list(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij"))
    expect_live(page)
    row = submit_job(page, "/bin/sleep", "300", "cancel-me")
    expect(row.locator(".badge")).to_have_text("ACTIVE")
    row.get_by_role("button", name=re.compile("Cancel job")).click()
    # One click only asks (issue 14); the dialog's button cancels.
    page.get_by_role("dialog").get_by_role("button", name="Cancel job").click()
    expect(row.locator(".badge")).to_have_text("CANCELED")
    expect(row.get_by_role("button", name=re.compile("Cancel job"))).to_have_count(0)


# --- Slurm: queues and accounts from queue_info, a batch job to COMPLETED -----------------------------


@pytest.mark.slurm
@pytest.mark.slurmdbd
def test_a_slurm_job_with_partition_and_account_chosen_from_queue_info(portal, open_page):
    from playwright.sync_api import expect

    for check in (slurm_running, slurm_enforces_accounts):  # accounts come from slurmdbd
        ok, reason = check()
        if not ok:
            pytest.skip(reason)
    portal.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij"))
    expect_live(page)
    expect(page.locator('#psij-executor option[value="slurm"]')).to_be_enabled()
    page.select_option("#psij-executor", "slurm")
    expect(page.locator("#psij-queue")).to_be_enabled()
    expect(page.locator('#psij-queue option[value="debug"]')).to_contain_text("(default)")
    expect(page.locator('#psij-account option[value="proj1"]')).to_be_attached()
    page.select_option("#psij-queue", "batch")
    page.select_option("#psij-account", "proj1")
    page.get_by_label("Wall time").fill("00:02:00")
    page.get_by_label("Nodes").fill("1")
    page.get_by_label("Executable").fill("/bin/sh")
    page.get_by_label("Arguments").fill("-c 'echo on $SLURM_JOB_PARTITION'")
    name = f"portal-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Job name").fill(name)
    page.get_by_role("button", name="Preview script").click()
    expect(page.locator("#psij-preview-text")).to_contain_text("#SBATCH")
    expect(page.locator("#psij-preview-text")).to_contain_text("batch")
    mark_no_reload(page)
    page.get_by_role("button", name="Submit job").click()
    row = job_row(page, name)
    expect(row).to_contain_text("slurm")
    expect(row.locator(".badge")).to_have_text("COMPLETED", timeout=180_000)
    assert_not_reloaded(page)
    row.get_by_role("link").click()
    expect(page.locator("#job-stdout")).to_contain_text("on batch")
    expect(page.locator("#job-details")).to_contain_text("proj1")
    expect(page.locator("#job-details")).to_contain_text("2 min")

    # The queue page shows the same partitions and accounts, sortable, with a forced refresh.
    page.get_by_role("link", name="Queues & allocations").click()
    partitions = page.locator("#qi-queues tbody")
    expect(partitions).to_contain_text("debug")
    expect(partitions).to_contain_text("batch")
    expect(page.locator("#qi-allocs tbody")).to_contain_text("proj1")
    page.locator("#qi-queues th", has_text="Partition").get_by_role("button").click()
    expect(partitions.locator("tr").first).to_contain_text("debug")
    page.get_by_role("button", name="Force refresh").click()
    expect(page.locator("#qi-queues-meta")).to_contain_text("collected")
    page.select_option("#qi-state", "all")
    expect(page.locator("#qi-jobs-status")).to_contain_text("job")


# --- rhapsody -----------------------------------------------------------------------------------


def test_rhapsody_tasks_run_with_live_states_results_and_statistics(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "rhapsody"))
    expect_live(page)
    mark_no_reload(page)
    page.get_by_label("Executable").fill("/bin/echo")
    page.get_by_label("Arguments", exact=True).fill("hello 'from tasks'")
    page.get_by_label("Copies").fill("3")
    page.get_by_label("Label", exact=True).fill("greeter")
    page.get_by_role("button", name="Submit", exact=True).click()
    expect(page.locator("#rh-submit-status")).to_contain_text("Submitted 3 tasks")
    done = page.locator('#rh-tasks tbody tr[data-state="DONE"]', has_text="greeter")
    expect(done).to_have_count(3)
    expect(done.first).to_contain_text("hello from tasks")

    page.select_option("#rh-kind", "function")
    page.select_option("#rh-function", "add")
    page.get_by_label("Function arguments (JSON list)").fill("[2, 40]")
    page.get_by_label("Copies").fill("1")
    page.get_by_label("Label", exact=True).fill("adder")
    page.get_by_role("button", name="Submit", exact=True).click()
    expect(page.locator("#rh-tasks tbody tr", has_text="adder")).to_contain_text("→ 42")

    page.select_option("#rh-kind", "executable")
    page.get_by_label("Executable").fill("/bin/sleep")
    page.get_by_label("Arguments", exact=True).fill("300")
    page.get_by_label("Label", exact=True).fill("sleeper")
    page.get_by_role("button", name="Submit", exact=True).click()
    sleeper = page.locator("#rh-tasks tbody tr", has_text="sleeper")
    expect(sleeper.locator(".badge")).to_have_text("RUNNING")
    sleeper.get_by_role("button", name=re.compile("Cancel task")).click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel task").click()
    expect(sleeper.locator(".badge")).to_have_text("CANCELED")

    stats = page.locator("#rh-stats")
    expect(stats.locator('[data-figure="done"] .value')).to_have_text("4")
    expect(stats.locator('[data-figure="canceled"] .value')).to_have_text("1")
    page.locator("#rh-tasks tbody tr", has_text="adder").get_by_role("button", name=re.compile("Details")).click()
    expect(page.locator("#rh-detail")).to_contain_text("Return value")
    expect(page.locator("#rh-detail")).to_contain_text("42")
    assert_not_reloaded(page)

    # The session and its tasks are still there after a reload.
    page.reload()
    expect(page.locator('#rh-tasks tbody tr[data-state="DONE"]')).to_have_count(4)


# --- the dashboard's recent work -----------------------------------------------------------------


def test_dashboard_lists_my_recent_jobs_and_tasks_and_follows_new_ones(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    with portal.api("alice") as api:
        psij_sid = api.post(f"/{EDGE}/psij/register_session").json()["sid"]
        api.post(f"/{EDGE}/psij/submit/{psij_sid}", json={
            "job_spec": {"executable": "/bin/true", "name": "earlier-job"}, "executor": "local"})
        rh_sid = api.post(f"/{EDGE}/rhapsody/register_session", json={"backends": ["concurrent"]}).json()["sid"]
        api.post(f"/{EDGE}/rhapsody/submit/{rh_sid}", json={"tasks": [{"function": "noop", "name": "earlier-task"}]})
    page = open_page("alice")
    recent = page.locator("#recent tbody")
    expect(recent.locator("tr", has_text="earlier-job").locator(".badge")).to_have_text("COMPLETED")
    expect(recent.locator("tr", has_text="earlier-task").locator(".badge")).to_have_text("DONE")
    expect_live(page)
    mark_no_reload(page)
    # A job submitted elsewhere (the REST API here) appears and reaches its end live.
    with portal.api("alice") as api:
        job = api.post(f"/{EDGE}/psij/submit/{psij_sid}", json={
            "job_spec": {"executable": "/bin/sh", "arguments": ["-c", "sleep 1"], "name": "from-the-api"},
            "executor": "local"}).json()
    row = recent.locator("tr", has_text="from-the-api")
    expect(row.locator(".badge")).to_have_text("COMPLETED")
    assert_not_reloaded(page)
    row.get_by_role("link", name=job["job_id"]).click()
    expect(page.locator("#job-state")).to_have_text("COMPLETED")


# --- other people ---------------------------------------------------------------------------------


def test_other_users_see_none_of_alices_work(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    with portal.api("alice") as api:
        sid = api.post(f"/{EDGE}/psij/register_session").json()["sid"]
        spec = {"executable": "/bin/echo", "arguments": ["alice's secret"]}
        alices_job = api.post(f"/{EDGE}/psij/submit/{sid}", json={"job_spec": spec}).json()["job_id"]

    # bob may use the edge, but sees only his own (no) jobs and tasks.
    bob = open_page("bob")
    expect(bob.locator(f'#edges tr[data-edge="{EDGE}"] .edge-state')).to_have_text("online")
    expect(bob.locator("#recent tbody")).to_contain_text("No jobs or tasks yet")
    bob.goto(edge_path("plugins", "psij"))
    expect_live(bob)
    expect(bob.locator("#psij-jobs tbody")).to_contain_text("No jobs yet")
    bob.goto(edge_path("plugins", "psij", "jobs", alices_job))
    expect(bob.locator("#job-status")).to_contain_text("No such job")
    expect(bob.locator("#job-stdout")).to_be_empty()
    bob.goto(edge_path("plugins", "rhapsody"))
    expect(bob.locator("#rh-session")).to_have_value("")
    expect(bob.locator("#rh-tasks tbody")).to_contain_text("No tasks")
    # While bob watches, alice's new job changes nothing on his page.
    bob.goto(edge_path("plugins", "psij"))
    expect_live(bob)
    mark_no_reload(bob)
    with portal.api("alice") as api:
        job = api.post(f"/{EDGE}/psij/submit/{sid}", json={
            "job_spec": {"executable": "/bin/true", "name": "alice-only"}, "executor": "local"}).json()
        wait_for(lambda: api.get(f"/{EDGE}/psij/status/{sid}/{job['job_id']}").json()["state"] == "COMPLETED", 30,
                 what="alice's job completed")
    bob.get_by_role("button", name="Refresh").click()
    expect(bob.locator("#psij-jobs tbody")).to_contain_text("No jobs yet")
    assert_not_reloaded(bob)

    # dave may only look: the forms say so and submit nothing.
    dave = open_page("dave")
    dave.goto(edge_path("plugins", "psij"))
    expect(dave.get_by_role("button", name="Submit job")).to_be_disabled()
    expect(dave.locator("#psij-form")).to_contain_text("viewer access")
    expect(dave.locator(".badge.role")).to_have_text("viewer")

    # carol has no access: no edge, and its pages are "not found", not an error dump.
    carol = open_page("carol")
    expect(carol.locator("#no-edges")).to_contain_text("You have no edges yet")
    expect(carol.locator("#recent-notes")).to_contain_text("Nothing to show yet")
    response = carol.goto(edge_path("plugins", "psij"))
    assert response.status == 404
    expect(carol.get_by_role("alert")).to_contain_text("No such edge")
    answer = carol.evaluate(f"fetch('/{EDGE}/psij/executors').then(r => r.status)")
    assert answer == 404


# --- any plugin, from its UI schema ----------------------------------------------------------------


def test_a_third_party_plugin_gets_a_usable_page_from_its_ui_schema(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "scratch"))
    expect_live(page)
    expect(page.get_by_role("heading", name="Scratch space scratch 1.2.0")).to_be_visible()
    usage = page.locator('[data-monitor="usage"]')
    expect(usage.locator('[data-figure="files"] .value')).to_have_text("48,213")
    expect(usage).to_contain_text("Soft gib")
    expect(page.locator('[data-monitor="files"] tbody tr')).to_have_count(3)
    expect(page.locator('[data-monitor="purges"] tbody')).to_contain_text("No purges yet")

    page.get_by_role("button", name="Purge").click()
    expect(page.locator("#form-purge-pattern")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Pattern *").fill("*.tmp")
    page.get_by_label("Mode").select_option("thorough")
    page.get_by_label("Dry run").check()
    page.get_by_label("Takes (seconds)").fill("1")
    mark_no_reload(page)
    page.get_by_role("button", name="Purge").click()
    purge = page.locator('[data-monitor="purges"] tbody tr', has_text="*.tmp")
    expect(purge.locator(".badge")).to_have_text("DONE")
    expect(page.locator(".event-log")).to_contain_text("17 files removed")
    purge.get_by_role("button", name=re.compile("purge-")).click()
    detail = page.locator(".monitor-detail")
    expect(detail).to_contain_text("thorough")  # the select's value reached the plugin
    expect(detail).to_contain_text("yes")  # and the checkbox, as a boolean
    page.locator('[data-monitor="config"]').get_by_role("button", name="Load").click()
    expect(page.locator('[data-monitor="config"] pre')).to_contain_text('"purge_after_days": 30')
    assert_not_reloaded(page)

    # A plugin without a UI schema, or a missing one, is explained in words.
    response = page.goto(edge_path("plugins", "nosuchplugin"))
    assert response.status == 404
    expect(page.get_by_role("alert")).to_contain_text("does not offer a plugin named")


# --- injection --------------------------------------------------------------------------------------


def _assert_inert(page) -> None:
    """Nothing hostile became markup: no injected images or scripts, no handler attributes."""
    assert page.locator("img").count() == 0
    assert page.locator("[onerror]").count() == 0
    assert page.locator("script:not([src]):not([type='application/json'])").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_hostile_names_titles_and_output_are_shown_as_text(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    page = open_page("alice")
    csp = page.goto("/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    expect(page.locator(f'#edges tr[data-edge="{EDGE}"] .edge-plugins')).to_contain_text(f"evil{XSS_IMG}")
    _assert_inert(page)

    page.goto(edge_path())
    expect(page.locator(".plugin-card", has_text=f"evil{XSS_IMG}")).to_contain_text(XSS_SCRIPT)
    _assert_inert(page)

    page.goto(edge_path("plugins", "hostile"))
    expect(page.get_by_role("heading", name=f"Hostile {XSS_IMG}").first).to_be_visible()
    expect(page.locator('[data-monitor="m"]')).to_contain_text(XSS_SCRIPT)
    expect(page.get_by_role("button", name=XSS_IMG)).to_be_visible()
    # The form's endpoint, filled in, leaves the plugin: the portal refuses to send it.
    page.get_by_role("button", name=XSS_IMG).click()
    expect(page.locator('[data-form="f<b>1</b>"]')).to_contain_text("refused to call")
    _assert_inert(page)

    page.goto(edge_path("plugins", "scratch"))
    expect(page.locator('[data-monitor="files"] tbody')).to_contain_text(XSS_SCRIPT)
    _assert_inert(page)

    # A job named and printing markup, followed on the list and the job page.
    page.goto(edge_path("plugins", "psij"))
    row = submit_job(page, "/bin/echo", shlex.quote(XSS_IMG), XSS_SCRIPT)
    expect(row.locator(".badge")).to_have_text("COMPLETED")
    _assert_inert(page)
    row.get_by_role("link").click()
    expect(page.locator("#job-stdout")).to_contain_text(XSS_IMG)
    expect(page.locator("#job-details")).to_contain_text(XSS_SCRIPT)
    _assert_inert(page)


# --- tokens and sharing ------------------------------------------------------------------------------


def test_tokens_are_shown_once_and_revoked_and_an_edge_is_shared_from_the_portal(portal, open_page):
    from playwright.sync_api import expect

    page = open_page("alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API tokens").click()
    page.get_by_label("Label").fill("laptop SDK")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token")
    expect(token).to_have_value(re.compile(r"^rda_"))
    plaintext = token.input_value()
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-status")).to_have_text(re.compile(r"Copied|Selected"))
    with httpx.Client(base_url=portal.url, headers={"Authorization": f"Bearer {plaintext}"}) as api:
        assert api.get("/api/v1/edges/").status_code == 200
        page.goto("/tokens/")
        expect(page.locator("#new-token")).to_have_count(0)  # shown once only
        row = page.locator("tbody tr", has_text="laptop SDK")
        row.get_by_role("button", name=re.compile("Revoke")).click()
        page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
        expect(page.locator(".messages")).to_contain_text("is revoked")
        expect(page.locator("tbody tr", has_text="laptop SDK")).to_contain_text("revoked")
        assert wait_for(lambda: api.get("/api/v1/edges/").status_code == 401, 15, what="token refused")

    page.goto(edge_path("sharing"))
    page.get_by_label("Username or group name").fill("carol")
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Share").click()
    expect(page.locator(".messages")).to_contain_text("carol is now viewer")
    page.get_by_role("button", name="Remove the role of carol").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove").click()
    expect(page.locator(".messages")).to_contain_text("carol no longer has a role")
    page.get_by_label("Username or group name").fill("nobody-here")
    page.get_by_role("button", name="Share").click()
    expect(page.get_by_role("alert")).to_contain_text("There is no user named")


# --- losing the edge, losing the bridge --------------------------------------------------------------


def test_pages_say_when_the_edge_goes_away_and_recover_when_it_returns(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    page = open_page("alice")
    page.goto(edge_path("plugins", "psij"))
    expect_live(page)
    mark_no_reload(page)
    portal.agent.stop()
    expect(page.locator("#edge-state")).to_have_text("offline")
    expect(page.locator("#edge-offline")).to_contain_text("This edge is offline")
    expect(page.get_by_role("button", name="Submit job")).to_be_disabled()
    portal.start_agent()
    expect(page.locator("#edge-state")).to_have_text("online")
    expect(page.locator("#edge-offline")).to_be_hidden()
    expect(page.get_by_role("button", name="Submit job")).to_be_enabled()
    assert_not_reloaded(page)


def test_a_page_that_loses_the_bridge_says_so_and_reconnects(portal, open_page):
    from playwright.sync_api import expect

    portal.ensure_online()
    page = open_page("alice")
    expect_live(page)
    mark_no_reload(page)
    portal.bridge.stop()
    expect(page.locator("#live-status")).not_to_have_text("Live")
    expect(page.locator("#live-banner")).to_contain_text("Live updates are interrupted")
    portal.bridge.start()
    expect_live(page)
    expect(page.locator("#live-banner")).to_be_hidden()
    # The agent reconnects to the restarted bridge and the dashboard shows it, still unreloaded.
    expect(page.locator(f'#edges tr[data-edge="{EDGE}"] .edge-state')).to_have_text("online", timeout=60_000)
    assert_not_reloaded(page)
