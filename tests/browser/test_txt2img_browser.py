"""Text to image as a person does it: type, generate, see the image and the gallery."""

from __future__ import annotations

import pytest

from .conftest import no_error_toast, open_tab

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def test_generate_from_prompt(page):
    open_tab(page, "Text to image")
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    page.get_by_text("Generation settings").first.click()
    set_number(page, "txt2img-steps", 2)
    set_number(page, "txt2img-width", 128)
    set_number(page, "txt2img-height", 128)
    page.locator("#txt2img-generate").click()
    page.locator("#txt2img-result img").wait_for(state="visible")
    assert "txt2img" in page.locator("#txt2img-result img").get_attribute("src")
    # the session gallery received it too
    page.locator("#session-gallery img").first.wait_for(state="visible")
    no_error_toast(page)


def test_bad_input_shows_error_and_next_run_works(page):
    open_tab(page, "Text to image")
    page.locator("#txt2img-prompt textarea").fill("   ")
    page.locator("#txt2img-generate").click()
    page.get_by_text("prompt is empty").first.wait_for(state="visible")
    page.locator("#txt2img-prompt textarea").fill("a blue square")
    page.get_by_text("Generation settings").first.click()
    set_number(page, "txt2img-steps", 2)
    set_number(page, "txt2img-width", 64)
    set_number(page, "txt2img-height", 64)
    page.locator("#txt2img-generate").click()
    page.locator("#txt2img-result img").wait_for(state="visible")
