"""PNG info as a person uses it: drop a saved image, read it, send it back, regenerate it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .conftest import fetch_image, no_error_toast, open_settings, open_tab, wait_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_read_send_to_txt2img_and_regenerate(page, studio):
    saved = studio.txt2img({"prompt": "a green triangle", "negative_prompt": "blurry",
                            "seed": 123, "steps": 2, "width": 64, "height": 96})
    open_tab(page, "PNG info")
    page.locator("#pnginfo-image input[type=file]").set_input_files(str(saved.path))
    params = page.locator("#pnginfo-params textarea")
    page.wait_for_function(
        "() => document.querySelector('#pnginfo-params textarea').value.includes('Seed: 123')")
    assert params.input_value().startswith("a green triangle\nNegative prompt: blurry")

    page.locator("#pnginfo-regenerate").click()
    regenerated = fetch_image(page, wait_image(page, "#pnginfo-result"))
    assert np.array_equal(np.asarray(regenerated.convert("RGB")),
                          np.asarray(Image.open(saved.path).convert("RGB")))

    page.locator("#pnginfo-send").click()
    prompt = page.locator("#txt2img-prompt textarea")
    prompt.wait_for(state="visible")  # the text-to-image tab is now shown
    page.wait_for_function(
        "() => document.querySelector('#txt2img-prompt textarea').value === 'a green triangle'")
    assert page.locator("#txt2img-negative_prompt textarea").input_value() == "blurry"
    open_settings(page)  # the seed sits in the collapsed settings accordion
    assert page.locator("#txt2img-seed input").input_value() == "123"
    assert page.locator("#txt2img-height input[type=number]").input_value() == "96"
    no_error_toast(page)
