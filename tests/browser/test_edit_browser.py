"""Edit tab as a person uses it: paint a mask or click the object (SAM), then inpaint.

Both runs check the tab's promise: pixels outside the mask come back exactly as uploaded.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .conftest import (
    drag,
    fetch_image,
    no_error_toast,
    on_box,
    open_settings,
    open_tab,
    set_number,
    wait_image,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def upload(page, photo) -> None:
    open_tab(page, "Edit")
    page.locator("#edit-image input[type=file]").set_input_files(str(photo))
    page.locator("#edit-image img").wait_for(state="visible")


def inpaint_and_check(page, photo, mask: np.ndarray) -> None:
    """Inpaint (2 steps); the result has the image's size and the unmasked pixels unchanged."""
    page.locator("#edit-prompt textarea").fill("a cat")
    open_settings(page)
    set_number(page, "edit-steps", 2)
    page.locator("#edit-generate").click()
    result = np.asarray(fetch_image(page, wait_image(page, "#edit-result")).convert("RGB"))
    original = np.asarray(Image.open(photo).convert("RGB"))
    assert result.shape == original.shape
    keep = ~mask
    assert keep.any()
    assert np.array_equal(result[keep], original[keep]), "pixels outside the mask changed"
    assert not np.array_equal(result[mask], original[mask]), "the masked area was not repainted"
    page.locator("#session-gallery img").first.wait_for(state="visible")
    no_error_toast(page)


def test_paint_mask_with_brush_then_inpaint(page, photo):
    upload(page, photo)
    editor = page.locator("#edit-editor")
    editor.get_by_role("button", name="Brush", exact=True).click()
    canvas = editor.locator(".pixi-target canvas")
    drag(page, [on_box(canvas, 0.45, 0.5), on_box(canvas, 0.55, 0.5)])  # across the body
    mask = np.asarray(fetch_image(page, wait_image(page, "#edit-mask")).convert("L")) > 127
    assert mask.shape == (128, 128)
    assert mask[64, 64] and not mask[5, 5] and not mask[120, 5], "the mask is where I painted"
    wait_image(page, "#edit-preview")  # red overlay of what will change
    inpaint_and_check(page, photo, mask)


def test_click_object_for_sam_mask_then_inpaint(page, photo):
    upload(page, photo)
    page.get_by_role("tab", name="Click the object (SAM)").click()
    view = page.locator("#edit-sam-view img")
    view.wait_for(state="visible")
    box = view.bounding_box()
    view.click(position={"x": box["width"] * 64 / 128, "y": box["height"] * 55 / 128})
    wait_image(page, "#edit-candidates")
    x, y, label = page.evaluate(
        "() => JSON.parse(document.querySelector('#edit-points textarea').value)[0]")
    assert abs(x - 64) <= 2 and abs(y - 55) <= 2 and label == 1, (x, y, label)  # image pixels
    wait_image(page, "#edit-mask")
    candidates = page.locator("#edit-candidates img")
    assert candidates.count() >= 1

    # pick the first candidate: it becomes the mask
    wanted = np.asarray(fetch_image(page, candidates.first.get_attribute("src")).convert("L"))
    candidates.first.click()

    def mask_now() -> np.ndarray:
        src = page.locator("#edit-mask img").get_attribute("src")
        return np.asarray(fetch_image(page, src).convert("L"))

    for _ in range(50):
        if np.array_equal(mask_now() > 127, wanted > 127):
            break
        page.wait_for_timeout(200)
    mask = mask_now() > 127
    assert np.array_equal(mask, wanted > 127), "the picked candidate did not become the mask"
    assert mask.any()
    inpaint_and_check(page, photo, mask)


def test_describe_it_finds_boxes_then_inpaints(page, photo):
    """Tiny set: the random detector proves the wiring (boxes shown, objects listed, a mask of
    the image's size, dropping an object changes the list), not the meaning."""
    upload(page, photo)
    page.get_by_role("tab", name="Describe it").click()
    page.locator("#edit-text textarea").fill("the cat")
    set_number(page, "edit-threshold", 0)
    page.locator("#edit-find").click()
    mask = np.asarray(fetch_image(page, wait_image(page, "#edit-mask")).convert("L")) > 127
    assert mask.shape == (128, 128)
    page.locator("#edit-boxes img").first.wait_for(state="visible")  # the boxes, labelled
    ticks = page.locator("#edit-objects input[type=checkbox]")
    ticks.first.wait_for(state="visible")
    assert ticks.count() >= 1 and all(ticks.nth(i).is_checked() for i in range(ticks.count()))
    assert "the cat" in page.locator("#edit-objects").inner_text()
    no_error_toast(page)
    if mask.any() and not mask.all():
        inpaint_and_check(page, photo, mask)


def test_sketch_colours_become_the_mask_and_the_start(page, photo):
    """Inpaint sketch: green paint lands on the image, its area is the mask, strength drops
    to 0.75; the inpaint keeps every unpainted pixel of the photo."""
    upload(page, photo)
    old = page.locator("#edit-image img").get_attribute("src")
    page.get_by_role("tab", name="Sketch colours").click()
    sketch = page.locator("#edit-sketch")
    sketch.get_by_role("button", name="Brush", exact=True).click()
    canvas = sketch.locator(".pixi-target canvas")
    drag(page, [on_box(canvas, 0.45, 0.5), on_box(canvas, 0.55, 0.5)])  # the canvas centre
    mask = np.asarray(fetch_image(page, wait_image(page, "#edit-mask")).convert("L")) > 127
    assert mask.shape == (128, 128) and mask[64, 64]
    assert not mask[5, 5] and not mask[120, 5]
    painted = np.asarray(fetch_image(page, wait_image(page, "#edit-image", old_src=old))
                         .convert("RGB"))
    original = np.asarray(Image.open(photo).convert("RGB"))
    assert (painted[mask] != original[mask]).any(-1).mean() > 0.8  # the paint is on it
    assert np.array_equal(painted[~mask], original[~mask])
    assert page.locator("#edit-strength input[type=number]").input_value() == "0.75"
    inpaint_and_check(page, photo, mask)
