"""Control tab as a person uses it: sketch and generate; photo -> openpose preview -> fix -> run."""

from __future__ import annotations

import json

import numpy as np
import pytest

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

# A standing person on a 128 x 128 canvas, COCO-18 order (nose, neck, right arm, left arm,
# right leg, left leg, eyes, ears), as OpenPose JSON.
POSE = {
    "canvas_width": 128, "canvas_height": 128,
    "people": [{"pose_keypoints_2d": [
        64, 20, 1, 64, 36, 1, 52, 38, 1, 44, 56, 1, 40, 72, 1, 76, 38, 1, 84, 56, 1, 88, 72, 1,
        56, 74, 1, 54, 96, 1, 52, 118, 1, 72, 74, 1, 74, 96, 1, 76, 118, 1, 60, 16, 1, 68, 16, 1,
        56, 18, 1, 72, 18, 1,
    ]}],
}


def small_run(page, prompt: str) -> None:
    page.locator("#control-prompt textarea").fill(prompt)
    open_settings(page)
    set_number(page, "control-steps", 2)
    set_number(page, "control-width", 64)
    set_number(page, "control-height", 64)


def sketch_an_x(page) -> None:
    """Draw an X in unit 1's sketch, in the middle of the white page (the canvas is wider
    than the page it shows)."""
    sketch = page.locator("#control-unit1-sketch")
    sketch.get_by_role("button", name="Brush", exact=True).click()
    canvas = sketch.locator(".pixi-target canvas")
    drag(page, [on_box(canvas, 0.42, 0.3), on_box(canvas, 0.58, 0.7)])
    drag(page, [on_box(canvas, 0.58, 0.3), on_box(canvas, 0.42, 0.7)])


def test_sketch_strokes_then_generate(page):
    open_tab(page, "Control")
    small_run(page, "a house")
    sketch_an_x(page)
    page.locator("#control-generate").click()
    result = fetch_image(page, wait_image(page, "#control-result"))
    assert result.size == (64, 64)
    # the map used is the scribble of the strokes: white lines on black, at the output size
    cmap = np.asarray(fetch_image(page, wait_image(page, "#control-maps")).convert("L"))
    assert cmap.shape == (64, 64)
    white = (cmap > 128).mean()
    assert 0.02 < white < 0.5, f"scribble map should hold the strokes, {white:.1%} white"
    page.locator("#session-gallery img").first.wait_for(state="visible")
    no_error_toast(page)


def test_photo_openpose_preview_edit_pose_and_generate(page, photo):
    open_tab(page, "Control")
    small_run(page, "a dancer")
    page.locator("#control-unit1-enabled input").uncheck()
    page.locator("#control-unit2").get_by_text("Control unit 2", exact=True).click()
    page.locator("#control-unit2-enabled input").check()
    assert page.locator("#control-unit2-type input").input_value() == "openpose"
    page.locator("#control-unit2-photo input[type=file]").set_input_files(str(photo))
    page.locator("#control-unit2-photo img").wait_for(state="visible")

    page.locator("#control-unit2-preview-button").click()
    first = wait_image(page, "#control-unit2-preview")
    keypoints = page.locator("#control-unit2-keypoints .cm-content")
    assert '"people"' in keypoints.inner_text()
    assert page.locator("#control-unit2-use-preview input").is_checked()

    # fix the pose by hand: replace the JSON and re-render
    keypoints.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(json.dumps(POSE))
    page.locator("#control-unit2-rerender").click()
    pose = fetch_image(page, wait_image(page, "#control-unit2-preview", old_src=first))
    assert pose.size == (128, 128)  # the JSON's canvas
    limbs = (np.asarray(pose.convert("RGB")).max(axis=2) > 50).mean()
    assert limbs > 0.02, "the edited pose should be drawn as coloured limbs"

    page.locator("#control-generate").click()
    assert fetch_image(page, wait_image(page, "#control-result")).size == (64, 64)
    # generation used the edited pose (coloured limbs on black), fitted to 64 x 64
    used = np.asarray(fetch_image(page, wait_image(page, "#control-maps")).convert("RGB"))
    assert used.shape == (64, 64, 3)
    assert (used.max(axis=2) > 50).mean() > 0.02
    assert page.locator("#control-maps img").count() == 1  # unit 1 is off
    no_error_toast(page)
