"""Notifications in the portal, in a real headless Chromium against a real bridge and agent:
the Notifications page, the bell, desktop notifications (permission granted through the
browser context; the page's Notification constructor is wrapped to record what it shows),
and "tell me when this job ends" on the job page. Waits are on page state, never the clock."""

from __future__ import annotations

import re

import pytest

from edge_agent.client import BridgeClient
from tests.support.live import AgentProcess, wait_for
from tests.test_portal_browser import login

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

RECORD_NOTIFICATIONS = """
(() => {
  window.__notes = [];
  const Real = window.Notification;
  if (!Real) return;
  class Recording extends Real {
    constructor(title, options) {
      window.__notes.push({ title, body: (options || {}).body || "" });
      super(title, options);
    }
  }
  Object.defineProperty(Recording, "permission", { get: () => Real.permission });
  Recording.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Recording;
})();
"""


@pytest.fixture
def site(bridge_factory, tmp_path, unique_name):
    bridge = bridge_factory(env={"RADICAL_NOTIFY_WORKER": "1"})
    seeded = bridge.seed(users=["alice"], api_tokens=["alice"], edge_tokens=[(unique_name, "alice")])
    agent = AgentProcess(bridge.url, seeded["edge"][unique_name], tmp_path, plugins="psij",
                         options=["psij.poll_interval=1"]).start()
    wait_for(lambda: bridge.edge_online(seeded["api"]["alice"], unique_name), 30, what="edge online")
    yield type("Site", (), {"bridge": bridge, "token": seeded["api"]["alice"], "edge": unique_name})
    agent.stop()


@pytest.fixture
def page(site, browser):
    context = browser.new_context(base_url=site.bridge.url, viewport={"width": 1366, "height": 900})
    context.grant_permissions(["notifications"], origin=site.bridge.url)
    context.add_init_script(RECORD_NOTIFICATIONS)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    login(page, "alice")
    yield page
    context.close()
    assert not errors, f"script errors or CSP violations in the page: {errors}"


def notes(page) -> list[dict]:
    return page.evaluate("window.__notes || []")


def test_a_browser_subscription_shows_a_desktop_notification_and_counts_on_the_bell(site, page):
    from playwright.sync_api import expect

    page.get_by_role("link", name="Notifications").click()
    expect(page.get_by_role("heading", name="Notifications", exact=True)).to_be_visible()
    expect(page.locator("#desktop-state")).to_contain_text("Desktop notifications are on")
    page.get_by_label("Label").fill("My jobs")
    page.get_by_label("Target").select_option("browser")
    page.get_by_label("Topic").select_option("job_status")
    page.get_by_label("States").fill("completed")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.locator(".messages")).to_contain_text("Subscribed: My jobs")
    expect(page.locator("#subscriptions")).to_contain_text("COMPLETED")
    expect(page.locator("#live-status")).to_have_text("Live")
    expect(page.locator("#notify-count")).to_be_hidden()

    with BridgeClient(site.bridge.url, token=site.token) as bc:
        pj = bc.get_edge_client(site.edge).get_plugin("psij")
        job = pj.submit_job({"executable": "/bin/true"})
        assert pj.wait_job(job["job_id"], timeout=60, interval=0.2)["state"] == "COMPLETED"

    expect(page.locator("#notify-count")).to_have_text("1")
    expect(page.locator("#recent-notifications")).to_contain_text(f"Job {job['job_id']}")
    wait_for(lambda: notes(page), 10, what="a desktop notification")
    [note] = notes(page)
    assert note["title"] == "My jobs" and job["job_id"] in note["body"] and "COMPLETED" in note["body"]


def test_tell_me_when_this_job_ends_on_the_job_page(site, page, tmp_path):
    from playwright.sync_api import expect

    go = tmp_path / "go"
    with BridgeClient(site.bridge.url, token=site.token) as bc:
        pj = bc.get_edge_client(site.edge).get_plugin("psij")
        job = pj.submit_job({"executable": "/bin/sh",
                             "arguments": ["-c", f"while [ ! -f {go} ]; do sleep 0.1; done; exit 1"]})
        page.goto(f"/edges/{site.edge}/plugins/psij/jobs/{job['job_id']}/")
        expect(page.locator("#live-status")).to_have_text("Live")
        button = page.get_by_role("button", name=re.compile("Tell me when this job ends"))
        button.click()
        expect(page.locator("#job-status")).to_contain_text("You will be told when this job ends")
        expect(button).to_be_hidden()
        go.write_text("")
        assert pj.wait_job(job["job_id"], timeout=60, interval=0.2)["state"] == "FAILED"

    expect(page.locator("#notify-count")).to_have_text("1")
    wait_for(lambda: notes(page), 10, what="a desktop notification")
    [note] = notes(page)
    assert note["title"] == f"Job {job['job_id']} ended" and "FAILED" in note["body"]
    # The subscription is the user's like any other: on the Notifications page, deletable.
    page.goto("/notifications/")
    row = page.locator("#subscriptions tr", has_text=f"job_id={job['job_id']}")
    expect(row).to_be_visible()
    row.get_by_role("button", name=re.compile("Delete")).click()
    expect(page.locator(".messages")).to_contain_text("deleted")
    expect(page.locator("#subscriptions tr", has_text=f"job_id={job['job_id']}")).to_have_count(0)


def test_tell_me_when_it_ends_on_the_job_form(site, page, tmp_path):
    from playwright.sync_api import expect

    go = tmp_path / "go"
    page.goto(f"/edges/{site.edge}/plugins/psij/")
    expect(page.locator("#live-status")).to_have_text("Live")
    expect(page.locator("#psij-executor")).to_have_value("local")
    page.get_by_label("Executable").fill("/bin/sh")
    page.get_by_label("Arguments").fill(f"-c 'while [ ! -e {go} ]; do sleep 0.1; done'")
    page.get_by_label("Tell me when it ends").check()
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#psij-submit-status")).to_contain_text("You will be told when it ends")
    job_id = page.locator("#psij-submit-status a").inner_text()
    go.write_text("")
    expect(page.locator("#notify-count")).to_have_text("1")
    wait_for(lambda: notes(page), 10, what="a desktop notification")
    [note] = notes(page)
    assert note["title"] == f"Job {job_id} ended" and "COMPLETED" in note["body"]
