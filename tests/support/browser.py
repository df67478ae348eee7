"""Real headless Chromium for browser tests (Playwright, with the system's Chromium: it
cannot download its own). The ``browser`` fixture (tests/conftest.py) starts one per module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("RADICAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000


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
