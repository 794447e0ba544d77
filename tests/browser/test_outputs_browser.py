"""The Outputs tab as a person uses it: search the saved images, click one, read its
parameters, regenerate it, send it to Text to image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .conftest import fetch_image, no_error_toast, open_settings, open_tab, wait_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_search_click_regenerate_and_send(page, studio):
    saved = studio.txt2img({"prompt": "an outputs-tab purple circle", "seed": 321, "steps": 2,
                            "width": 64, "height": 64})
    studio.txt2img({"prompt": "an outputs-tab yellow square", "seed": 322, "steps": 1,
                    "width": 64, "height": 64})
    open_tab(page, "Outputs")
    gallery = page.locator("#outputs-gallery img")
    gallery.first.wait_for(state="visible")  # opening the tab lists the newest images
    assert page.locator("#outputs-page").inner_text().startswith("Page 1 of")
    # whole thumbnails, at least 6 a row, not two stretched over the width and cropped
    page.wait_for_function("() => document.querySelectorAll('#outputs-gallery img').length >= 2"
                           " && document.querySelector('#outputs-gallery img').naturalWidth > 0")
    grid = page.locator("#outputs-gallery").bounding_box()
    for i in range(2):
        thumb = gallery.nth(i)
        assert thumb.bounding_box()["width"] <= grid["width"] / 6
        assert thumb.evaluate("e => getComputedStyle(e).objectFit") == "contain"

    search = page.locator("#outputs-search textarea, #outputs-search input").first
    search.fill("OUTPUTS-TAB PURPLE")
    search.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('#outputs-gallery img').length === 1"
                           " && document.querySelector('#outputs-page').innerText"
                           ".includes('1 image')")
    gallery.first.click()
    page.wait_for_function(
        "() => document.querySelector('#outputs-params textarea').value.includes('Seed: 321')")
    params = page.locator("#outputs-params textarea").input_value()
    assert params.startswith("an outputs-tab purple circle\n")
    wait_image(page, "#outputs-image")

    page.locator("#outputs-regenerate").click()
    regenerated = fetch_image(page, wait_image(page, "#outputs-result"))
    assert np.array_equal(np.asarray(regenerated.convert("RGB")),
                          np.asarray(Image.open(saved.path).convert("RGB")))
    # the regenerated image joins the list (same search, now 2 matches)
    page.wait_for_function("() => document.querySelector('#outputs-page').innerText"
                           ".includes('2 images')")

    page.locator("#outputs-send").click()
    page.locator("#txt2img-prompt textarea").wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('#txt2img-prompt textarea').value"
                           " === 'an outputs-tab purple circle'")
    open_settings(page)
    assert page.locator("#txt2img-seed input").input_value() == "321"
    no_error_toast(page)
