"""Real headless Chromium for browser tests (Playwright, with the system's Chromium: it
cannot download its own). The ``browser`` fixture (tests/conftest.py) starts one per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import PASSWORD

CHROMIUM = os.environ.get("RADICAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def _playwright():
    """Playwright's sync API, or a skip saying what is missing."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium is missing at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright)")
    expect.set_options(timeout=WAIT_MS)
    return sync_playwright


def login(page: Any, user: str, password: str = PASSWORD) -> None:
    """Log in through the portal's form (the seeded users' password by default)."""
    from playwright.sync_api import expect

    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


@contextmanager
def page_opener(browser: Any, base_url: str, **defaults: Any) -> Iterator[Any]:
    """``make(user="alice", *, phone=False, **context_options)``: a page in a fresh browser
    context (desktop size, or a phone's), logged in as ``user`` (None: not logged in).
    ``defaults`` are context options for every page. Uncaught script errors and anything the
    Content Security Policy blocked, in any page, fail the test when the block ends."""
    contexts, errors = [], []

    def make(user: str | None = "alice", *, phone: bool = False, **options: Any) -> Any:
        options = {**defaults, **options}
        options.setdefault("viewport", PHONE if phone else DESKTOP)
        if phone:
            options.update(is_mobile=True, has_touch=True)
        context = browser.new_context(base_url=base_url, **options)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # Chromium reports what the Content Security Policy blocked on the console.
        page.on("console", lambda msg: errors.append(msg.text)
                if msg.type == "error" and "Content Security Policy" in msg.text else None)
        if user:
            login(page, user)
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()
    assert not errors, f"script errors or CSP violations in the page: {errors}"
