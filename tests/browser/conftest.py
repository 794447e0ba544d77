"""Real-browser fixtures: Debian's Chromium driven by Playwright against the served studio."""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

CHROMIUM = os.environ.get("STUDIO_CHROMIUM", "/usr/bin/chromium")
REPORT = Path(os.environ.get("STUDIO_TEST_REPORT", "test-report"))


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    """Chromium for this package only: closed after the browser tests, so it does not
    compete for the cores with the tests that follow."""
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


# ---------------------------------------------------------------------- helpers for the tab tests
ERROR_TOAST = ".toast-body.error"


def set_number(page, elem_id: str, value: float) -> None:
    """Type a value into the number box of the slider or number with this elem_id."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def set_slider(page, label: str, value: float) -> None:
    """Type a value into the number box of the visible slider labelled `label`."""
    box = page.get_by_label(f"number input for {label}", exact=True).locator("visible=true")
    box.fill(str(value))
    box.press("Enter")


def block(page, label: str):
    """The visible component block whose label is exactly `label` (for widgets without ids)."""
    exact = re.compile(rf"^\s*{re.escape(label)}\s*$")
    return (page.locator("[data-testid=block-label]", has_text=exact).locator("visible=true")
            .locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '),"
                     " ' block ')][1]"))


def open_settings(page) -> None:
    """Open the visible tab's 'Generation settings' accordion."""
    page.get_by_text("Generation settings", exact=True).locator("visible=true").first.click()


def wait_image(page, selector: str, old_src: str | None = None, timeout: float = 60_000) -> str:
    """Wait until the `img` under `selector` is loaded (and differs from `old_src`), failing
    at once with the toast's text if an error toast shows up instead; returns its src.

    Live previews (JPEG) show in a result image while it forms: this waits for the final
    image, not one of them."""
    page.wait_for_function(
        r"""([sel, old, toast]) => {
            if (document.querySelector(toast)) return true;
            const img = document.querySelector(sel + ' img');
            if (!img || img.offsetParent === null || img.getAttribute('src') === old) return false;
            if (/\.jpe?g$/i.test(img.getAttribute('src') || '')) return false;  // a preview
            // gradio's images load lazily: only once scrolled into view
            if (img.naturalWidth === 0) img.scrollIntoView({block: 'center'});
            return img.naturalWidth > 0;
        }""",
        arg=[selector, old_src, ERROR_TOAST], timeout=timeout,
    )
    no_error_toast(page)
    return page.locator(f"{selector} img").first.get_attribute("src")


def fetch_image(page, src: str) -> Image.Image:
    """The image behind an `img` src, as the server sends it."""
    response = page.request.get(src)
    assert response.ok, f"{src}: HTTP {response.status}"
    image = Image.open(io.BytesIO(response.body()))
    image.load()
    return image


def drag(page, points: list[tuple[float, float]]) -> None:
    """Press the mouse at the first point, move through the others, release (a stroke)."""
    page.mouse.move(*points[0])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def on_box(locator, fx: float, fy: float) -> tuple[float, float]:
    """Page coordinates of the point at fractions (fx, fy) of an element's box."""
    locator.scroll_into_view_if_needed()
    bb = locator.bounding_box()
    assert bb is not None, "element is not displayed"
    return bb["x"] + bb["width"] * fx, bb["y"] + bb["height"] * fy


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    """A 128 x 128 PNG of a stick figure on a light-blue background."""
    im = Image.new("RGB", (128, 128), (200, 220, 255))
    d = ImageDraw.Draw(im)
    d.ellipse((54, 10, 74, 30), fill=(230, 180, 150))
    d.rectangle((56, 30, 72, 80), fill=(40, 60, 160))
    d.line((64, 80, 50, 120), fill=(0, 0, 0), width=5)
    d.line((64, 80, 78, 120), fill=(0, 0, 0), width=5)
    path = tmp_path / "photo.png"
    im.save(path)
    return path
