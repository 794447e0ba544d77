"""Real-browser fixtures: Debian's Chromium driven by Playwright against the served studio."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("STUDIO_CHROMIUM", "/usr/bin/chromium")
REPORT = Path(os.environ.get("STUDIO_TEST_REPORT", "test-report"))


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Chromium not installed (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-quic"],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser, app_url: str, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh page on the studio; a screenshot per test lands in test-report/ for the report."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(app_url)
    pg.wait_for_selector("text=Controllable Studio")
    try:
        yield pg
    finally:
        REPORT.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(REPORT / f"{request.node.name}.png"), full_page=True)
        context.close()


def no_error_toast(page) -> None:
    """Gradio shows errors as toasts; none may be visible."""
    toasts = page.locator(".toast-body.error, [data-testid='toast-body'].error")
    assert toasts.count() == 0, toasts.first.inner_text()


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title).click()
