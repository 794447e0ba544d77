"""An SDXL studio (the random tiny-xl set) as a person uses it: Text to image generates,
the Layout tab says why it cannot run on SDXL, and pressing Generate there says the same."""

from __future__ import annotations

import pytest

from .conftest import no_error_toast, open_settings, open_tab, set_number, wait_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_url(xl_app_url) -> str:
    return xl_app_url


def test_sdxl_generates_and_layout_says_why_it_cannot(page):
    open_tab(page, "Text to image")
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    open_settings(page)
    set_number(page, "txt2img-steps", 2)
    page.locator("#txt2img-generate").click()
    assert "txt2img" in wait_image(page, "#txt2img-result")
    no_error_toast(page)

    open_tab(page, "Layout")
    note = "layout is not available for SDXL models: GLIGEN has no SDXL weights"
    page.get_by_text(note).first.wait_for(state="visible")  # on the tab, before any click
    page.locator("#layout-prompt textarea").fill("a cat")
    page.locator("#layout-generate").click()
    page.locator(".toast-body.error").get_by_text("GLIGEN has no SDXL weights").first\
        .wait_for(state="visible")
