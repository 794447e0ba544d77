"""The model picker as a person uses it: pick the SDXL checkpoint, generate in Text to image
(the info names the checkpoint), see the Layout tab say why SDXL cannot do box layouts, pick
the SD1.5 one back, the note is gone and generation is on it again. Another browser's choice
is its own."""

from __future__ import annotations

import pytest

from .conftest import no_error_toast, open_settings, open_tab, set_number, wait_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTE = "layout is not available for SDXL models"


def pick(page, name: str) -> None:
    box = page.locator("#model-picker input")
    box.click()
    page.get_by_role("option", name=name, exact=False).first.click()


def info_of(page, prefix: str) -> str:
    page.get_by_text("Info (JSON)").locator("visible=true").first.click()
    return page.locator(f"#{prefix}-info").inner_text()


def test_pick_a_model_generate_and_pick_back(page, browser, app_url):
    pick(page, "tiny-xl (SDXL)")
    open_tab(page, "Text to image")
    page.locator("#txt2img-prompt textarea").fill("a red circle")
    open_settings(page)
    set_number(page, "txt2img-steps", 2)
    set_number(page, "txt2img-width", 64)
    set_number(page, "txt2img-height", 64)
    page.locator("#txt2img-generate").click()
    wait_image(page, "#txt2img-result")
    no_error_toast(page)
    assert '"model": "tiny-xl"' in info_of(page, "txt2img")

    open_tab(page, "Layout")
    page.get_by_text(NOTE).first.wait_for(state="visible")

    # another visitor still gets the default
    other = browser.new_page()
    other.goto(app_url)
    other.wait_for_selector("text=Controllable Studio")
    assert other.locator("#model-picker input").input_value() == "tiny (SD1.5)"
    other.close()

    pick(page, "tiny (SD1.5)")
    page.get_by_text(NOTE).first.wait_for(state="hidden")
    open_tab(page, "Text to image")
    old = page.locator("#txt2img-result img").get_attribute("src")
    page.locator("#txt2img-generate").click()
    wait_image(page, "#txt2img-result", old_src=old)
    no_error_toast(page)
    assert '"model": "tiny"' in page.locator("#txt2img-info").inner_text()


def test_control_and_instruct_run_on_the_picked_sdxl_model(page, photo, studio):
    from .conftest import block, set_slider
    from .test_control_browser import sketch_an_x, small_run

    pick(page, "tiny-xl (SDXL)")
    open_tab(page, "Control")
    small_run(page, "a house")
    sketch_an_x(page)
    page.locator("#control-generate").click()
    wait_image(page, "#control-result")
    no_error_toast(page)
    assert '"model": "tiny-xl"' in info_of(page, "control")
    # the same sketch through ControlNet Union
    old = page.locator("#control-result img").get_attribute("src")
    page.locator("#control-unit1-union input").check()
    page.locator("#control-generate").click()
    wait_image(page, "#control-result", old_src=old)
    no_error_toast(page)
    from PIL import Image

    from studio.backend.outputs import read_metadata

    _, stored = read_metadata(Image.open(studio.outputs.root / studio.history(limit=1)[0]["file"]))
    assert stored["request"]["units"][0]["model"] == "union"

    open_tab(page, "Instruct")
    source = block(page, "Image to edit (Edit starts from this)")
    source.locator("input[type=file]").set_input_files(str(photo))
    source.locator("img").wait_for(state="visible")
    open_settings(page)
    set_slider(page, "Steps", 2)
    set_slider(page, "Max side", 64)
    page.get_by_label("Instruction").locator("visible=true").fill("make it winter")
    page.get_by_role("button", name="Edit", exact=True).click()
    block(page, "Edit history (click a version to go back to it)").locator("img").nth(1)\
        .wait_for(state="visible")
    no_error_toast(page)
    latest = studio.history(limit=1)[0]  # the edit the page just made
    assert latest["task"] == "instruct" and latest["model"] == "tiny-xl"


def test_edit_and_remix_run_on_the_picked_sdxl_model(page, photo, studio):
    """The rest of the generating tabs on SDXL: a painted mask inpainted by the SDXL
    inpainting UNet (unmasked pixels kept), and Remix through SDXL's IP-Adapter."""
    import numpy as np

    from .conftest import drag, fetch_image, on_box
    from .test_edit_browser import inpaint_and_check, upload
    from .test_remix_browser import _small_settings

    pick(page, "tiny-xl (SDXL)")
    upload(page, photo)
    editor = page.locator("#edit-editor")
    editor.get_by_role("button", name="Brush", exact=True).click()
    canvas = editor.locator(".pixi-target canvas")
    drag(page, [on_box(canvas, 0.45, 0.5), on_box(canvas, 0.55, 0.5)])
    mask = np.asarray(fetch_image(page, wait_image(page, "#edit-mask")).convert("L")) > 127
    inpaint_and_check(page, photo, mask)
    assert studio.history(limit=1)[0]["model"] == "tiny-xl"

    open_tab(page, "Remix")
    page.locator("#remix-images input[type=file]").set_input_files(str(photo))
    page.locator("#remix-thumbs img").first.wait_for(state="visible")
    _small_settings(page)
    page.locator("#remix-generate").click()
    wait_image(page, "#remix-result")
    no_error_toast(page)
    latest = studio.history(limit=1)[0]
    assert latest["task"] == "remix" and latest["model"] == "tiny-xl"
