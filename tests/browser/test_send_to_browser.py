"""Send to, as an artist chains work: Text to image -> Edit (extend the canvas) -> Instruct
-> Remix -> Control, each result sent on with no download; and a session gallery item goes
back to Text to image with its parameters."""

from __future__ import annotations

import pytest

from .conftest import (
    ERROR_TOAST,
    block,
    fetch_image,
    no_error_toast,
    open_settings,
    open_tab,
    set_number,
    set_slider,
    wait_image,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def send(page, source: str, target: str) -> None:
    """Pick `target` in the "Send to" of `source` (an elem_id prefix) and send."""
    page.locator(f"#{source}-sendto input").click()
    page.get_by_role("option", name=target, exact=True).click()
    page.locator(f"#{source}-send").click()


def test_a_result_goes_through_five_tabs_without_a_download(page):
    open_tab(page, "Text to image")
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    open_settings(page)
    for name, value in (("steps", 2), ("width", 64), ("height", 64)):
        set_number(page, f"txt2img-{name}", value)
    page.locator("#txt2img-generate").click()
    first = fetch_image(page, wait_image(page, "#txt2img-result"))
    assert first.size == (64, 64)

    # Edit: the image arrives; extend it 16 px to the right (no mask needed)
    send(page, "txt2img-result", "Edit")
    wait_image(page, "#edit-image")
    page.get_by_text("Extend the canvas (outpaint)").click()
    set_number(page, "edit-right", 16)
    page.locator("#edit-prompt textarea").fill("sky")
    page.get_by_text("Generation settings").locator("visible=true").first.click()
    set_number(page, "edit-steps", 2)
    page.locator("#edit-extend").click()
    extended = fetch_image(page, wait_image(page, "#edit-result"))
    assert extended.size == (80, 64)

    # Instruct: starts a new edit history from the sent image
    send(page, "edit-result", "Instruct")
    strip = block(page, "Edit history (click a version to go back to it)")
    strip.locator("img").first.wait_for(state="visible")
    page.get_by_label("Instruction").locator("visible=true").fill("make it blue")
    open_settings(page)
    set_slider(page, "Steps", 2)
    page.get_by_role("button", name="Edit", exact=True).click()
    strip.locator("img").nth(1).wait_for(state="visible")
    no_error_toast(page)
    page.get_by_text("Result file").locator("visible=true").first.click()
    wait_image(page, "#instruct-result")

    # Remix: the picture is added to its pictures
    send(page, "instruct-result", "Remix")
    page.locator("#remix-thumbs img").first.wait_for(state="visible")
    assert page.locator("#remix-thumbs img").count() == 1
    open_settings(page)
    for name, value in (("steps", 2), ("width", 64), ("height", 64)):
        set_number(page, f"remix-{name}", value)
    page.locator("#remix-generate").click()
    wait_image(page, "#remix-result")

    # Control: unit 1 takes it as its photo (switched from sketch)
    send(page, "remix-result", "Control (unit 1)")
    wait_image(page, "#control-unit1-photo")
    assert page.locator("#control-unit1-source input[value=image]").is_checked()
    page.locator("#control-prompt textarea").fill("a red circle")
    page.get_by_text("Generation settings").locator("visible=true").first.click()
    for name, value in (("steps", 2), ("width", 64), ("height", 64)):
        set_number(page, f"control-{name}", value)
    page.locator("#control-generate").click()
    wait_image(page, "#control-result")
    no_error_toast(page)

    # the session gallery: the first image back to Text to image, with its parameters (the
    # seed it was drawn with, where the tab still says -1 = random)
    page.locator("#session-gallery").scroll_into_view_if_needed()  # its images load lazily
    page.wait_for_function("() => document.querySelectorAll('#session-gallery img').length"
                           " === 5")
    page.locator("#session-gallery img").last.click()
    send(page, "session", "Text to image")
    page.wait_for_function("() => document.querySelector('#txt2img-seed input') &&"
                           " document.querySelector('#txt2img-seed input').value !== '-1'")
    assert page.locator("#txt2img-prompt textarea").input_value() == "a red circle"
    no_error_toast(page)


def test_sending_nothing_says_so(page):
    send(page, "txt2img-result", "Edit")
    page.locator(ERROR_TOAST).wait_for()
    assert "no image to send" in page.locator(ERROR_TOAST).first.inner_text()
