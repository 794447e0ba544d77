"""Text to image as a person does it: type, generate, see the image and the gallery."""

from __future__ import annotations

import pytest

from .conftest import no_error_toast, open_tab

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def prepare(page, prompt: str, steps: int, size: int) -> None:
    """Open the tab, type the prompt, set steps and a square size."""
    open_tab(page, "Text to image")
    page.locator("#txt2img-prompt textarea").fill(prompt)
    page.get_by_text("Generation settings").first.click()
    set_number(page, "txt2img-steps", steps)
    set_number(page, "txt2img-width", size)
    set_number(page, "txt2img-height", size)


def test_generate_from_prompt(page):
    prepare(page, "a red circle", 2, 128)
    page.locator("#txt2img-generate").click()
    from .conftest import wait_image

    assert "txt2img" in wait_image(page, "#txt2img-result")  # the saved file, not a preview
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


def test_edit_the_prompt_shows_source_and_edit_side_by_side(page):
    from .conftest import fetch_image, wait_image

    prepare(page, "a red circle and a blue square", 3, 64)
    page.get_by_text("Edit the prompt (prompt-to-prompt").click()
    page.locator("#p2p-edited_prompt textarea").fill("a red circle and a green square")
    page.locator("#p2p-run").click()
    edited = fetch_image(page, wait_image(page, "#p2p-result"))
    source = fetch_image(page, wait_image(page, "#p2p-source"))
    assert edited.size == source.size == (64, 64)
    assert "prompt_edit" in page.locator("#p2p-result img").get_attribute("src")
    # a bad edit: a clear message, and the panel still works afterwards
    page.locator("#p2p-edited_prompt textarea").fill("a red circle and a big blue square")
    page.locator("#p2p-run").click()
    page.get_by_text("swaps words token for token").first.wait_for(state="visible")


def test_attend_and_excite_checkbox(page):
    from .conftest import wait_image

    prepare(page, "a red circle and a blue square", 4, 64)
    page.get_by_text("Attend-and-Excite (every subject drawn)").click()
    page.locator("#txt2img-attend_excite input[type=checkbox]").check()
    page.locator("#txt2img-generate").click()
    wait_image(page, "#txt2img-result")
    page.get_by_text("Info (JSON)").locator("visible=true").first.click()
    info = page.locator("#txt2img-info").inner_text()
    assert '"excite_words"' in info and "circle" in info


def test_hires_fix_doubles_the_image(page):
    """Open "Hires fix", upscale by 2 with Lanczos: a 64 px first pass comes back 128 px."""
    from .conftest import fetch_image, wait_image

    prepare(page, "a red circle", 2, 64)
    page.locator("#txt2img-hires").get_by_text("Hires fix").first.click()
    set_number(page, "txt2img-hires_scale", 2)
    page.locator("#txt2img-hires_upscaler input").fill("lanczos")
    page.locator("#txt2img-hires_upscaler input").press("Enter")
    set_number(page, "txt2img-hires_steps", 2)
    page.locator("#txt2img-generate").click()
    image = fetch_image(page, wait_image(page, "#txt2img-result"))
    assert image.size == (128, 128)
    page.get_by_text("Info (JSON)").locator("visible=true").first.click()
    assert '"first_size"' in page.locator("#txt2img-info").inner_text()
    no_error_toast(page)
