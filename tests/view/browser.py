"""A headless Chromium driven by Playwright, for the viewer's browser tests and screenshots.

Needs the ``playwright`` package from PyPI and a Chromium on the machine; Playwright's own
browser download (``playwright install``) is not used. On Debian::

    apt-get install -y chromium
    .venv/bin/pip install playwright

Another Chromium can be named with ``SUBLEARN_CHROMIUM=/path/to/chrome``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when there is none."""
    named = os.environ.get("SUBLEARN_CHROMIUM")
    if named:
        return named if os.path.exists(named) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def missing_reason() -> str | None:
    """Why browser tests cannot run here (None when they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (.venv/bin/pip install playwright)"
    if chromium_path() is None:
        return "no Chromium found (apt-get install chromium, or set SUBLEARN_CHROMIUM)"
    return None


@contextmanager
def browser_page(width: int = 1300, height: int = 900) -> Iterator[tuple[Any, list[str]]]:
    """A fresh page and the list its console errors and uncaught exceptions land in."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
        finally:
            browser.close()
