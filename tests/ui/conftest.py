"""Browser fixtures: Debian's Chromium (never a downloaded one) driven by Playwright.

Without /usr/bin/chromium the UI tests skip with the reason, except in CI (env `CI` set), where
a missing browser is a failure: `.ci/run` installs it with apt-get.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("TRACEHOUSE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).parent / "artifacts"   # screenshots; git-ignored


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} not found: install Debian's package with `apt-get install -y chromium`"
    if os.environ.get("CI"):
        pytest.fail(f"UI tests need a browser in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh tab (own sessionStorage) that fails the test on any script error in the page.

    The page's Content-Security-Policy is bypassed so tests can evaluate JavaScript; it also
    means the untrusted-content test proves that content renders as text with no CSP to help.
    """
    context = browser.new_context(viewport={"width": 1440, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "401" not in msg.text
            and "404" not in msg.text and "400" not in msg.text else None)
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (tests/ui/artifacts/<name>.png)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
