"""The Control tab's pose editor as a person uses it: preview a photo with openpose, add a
person, drag a wrist with the mouse, export the JSON, and generate with the edited map."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from .conftest import drag, fetch_image, no_error_toast, on_box, open_tab, set_number, wait_image
from .test_control_browser import small_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

R_ELBOW, R_WRIST = 3, 4
EDITOR = "#control-unit2-pose-editor"


def _box_body(page) -> list[float]:
    """The body numbers in the unit's JSON box (its first lines: CodeMirror draws those)."""
    text = page.locator("#control-unit2-keypoints .cm-content").inner_text()
    start = text.index('"pose_keypoints_2d":') + len('"pose_keypoints_2d":')
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text[start:])[:3 * (R_WRIST + 1)]]


def _export(page) -> dict:
    """The editor's Export JSON, as the browser saves it."""
    with page.expect_download() as download:
        page.locator(EDITOR).get_by_role("button", name="Export JSON").click()
    with open(download.value.path(), encoding="utf-8") as f:
        return json.load(f)


def _near(arr: np.ndarray, x: float, y: float, r: int = 1) -> int:
    """The brightest channel value around map pixel (x, y)."""
    x, y = round(x), round(y)
    return int(arr[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].max())


def _generate(page, old: str | None) -> tuple[str, np.ndarray]:
    page.locator("#control-generate").click()
    src = wait_image(page, "#control-result", old_src=old)
    return src, np.asarray(fetch_image(page, src).convert("RGB"), dtype=np.int16)


def test_drag_a_wrist_in_the_pose_editor_changes_json_map_and_image(page, photo):
    open_tab(page, "Control")
    small_run(page, "a dancer")
    set_number(page, "control-seed", 7)
    page.locator("#control-unit1-enabled input").uncheck()
    page.locator("#control-unit2").get_by_text("Control unit 2", exact=True).click()
    page.locator("#control-unit2-enabled input").check()
    page.locator("#control-unit2-photo input[type=file]").set_input_files(str(photo))
    page.locator("#control-unit2-photo img").wait_for(state="visible")
    page.locator("#control-unit2-preview-button").click()
    detected = wait_image(page, "#control-unit2-preview")
    editor = page.locator(EDITOR)
    # the tiny set's random detector finds nobody: the editor shows the empty canvas
    page.wait_for_function(f"document.querySelector('{EDITOR} [data-people]')"
                           "?.dataset.people === '0'")

    editor.get_by_role("button", name="Add person").click()
    first = wait_image(page, "#control-unit2-preview", old_src=detected)
    before = np.asarray(fetch_image(page, first).convert("RGB"))
    exported = _export(page)
    width, height = exported["canvas_width"], exported["canvas_height"]
    assert before.shape == (height, width, 3)
    body = exported["people"][0]["pose_keypoints_2d"]
    assert _box_body(page) == pytest.approx(body[:3 * (R_WRIST + 1)], abs=0.01)  # in sync
    wx, wy = body[3 * R_WRIST:3 * R_WRIST + 2]
    assert _near(before, wx, wy) > 50, "the default person's right wrist is drawn"
    unedited_src, unedited = _generate(page, None)

    # drag the right wrist up and out, to (10%, 10%) of the canvas
    canvas = editor.locator("canvas")
    target = (0.1 * width, 0.1 * height)
    drag(page, [on_box(canvas, wx / width, wy / height),
                on_box(canvas, target[0] / width, target[1] / height)])
    second = wait_image(page, "#control-unit2-preview", old_src=first)
    after = np.asarray(fetch_image(page, second).convert("RGB"))
    moved = _export(page)["people"][0]["pose_keypoints_2d"]
    assert moved[3 * R_WRIST:3 * R_WRIST + 2] == pytest.approx(target, abs=0.02 * width)
    assert moved[:3 * R_WRIST] == body[:3 * R_WRIST]  # only the wrist moved
    assert moved[3 * R_WRIST + 3:] == body[3 * R_WRIST + 3:]
    assert _box_body(page) == pytest.approx(moved[:3 * (R_WRIST + 1)], abs=0.01)
    # the map: the forearm left the old wrist and reaches the new one
    assert _near(after, wx, wy) < 20 and _near(after, *target) > 50
    assert page.locator("#control-unit2-use-preview input").is_checked()

    edited_src, edited = _generate(page, unedited_src)
    assert (edited != unedited).any(), "the edited pose should steer the image"
    # Ctrl+Z puts the wrist back: the map and, same seed, the image are the unedited ones
    canvas.focus()
    page.keyboard.press("Control+z")
    third = wait_image(page, "#control-unit2-preview", old_src=second)
    assert np.array_equal(np.asarray(fetch_image(page, third).convert("RGB")), before)
    _, again = _generate(page, edited_src)
    assert np.array_equal(again, unedited)
    no_error_toast(page)


def _people(page) -> int:
    return int(page.locator(f"{EDITOR} [data-people]").get_attribute("data-people"))


def _grid(n: int, x0: int, y0: int, columns: int) -> list[float]:
    """n keypoints on a grid of 1 px steps from (x0, y0), as flat [x, y, 1] triplets."""
    return [v for i in range(n) for v in (x0 + i % columns, y0 + i // columns, 1)]


def _import(page, path) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator(EDITOR).get_by_role("button", name="Import JSON").click()
    chooser.value.set_files(str(path))


def test_pose_editor_imports_normalised_json_mirrors_scales_and_refuses_bad_files(
        page, tmp_path):
    from annotators.openpose import mirror_person

    from .test_control_browser import POSE

    open_tab(page, "Control")
    page.locator("#control-unit2").get_by_text("Control unit 2", exact=True).click()
    # the A1111 editor's normalised form: every coordinate a fraction of the canvas
    body = POSE["people"][0]["pose_keypoints_2d"]
    person = {"pose_keypoints_2d": body,  # + hands at the wrists, a face on the head
              "hand_left_keypoints_2d": _grid(21, 86, 74, 5),
              "hand_right_keypoints_2d": _grid(21, 38, 74, 5),
              "face_keypoints_2d": _grid(70, 58, 14, 10)}
    normalised = {**POSE, "people": [{k: [v / 128 if i % 3 < 2 else v for i, v in enumerate(vs)]
                                      for k, vs in person.items()}]}
    (tmp_path / "a1111.json").write_text(json.dumps(normalised))
    _import(page, tmp_path / "a1111.json")
    first = wait_image(page, "#control-unit2-preview")
    pixels = _export(page)
    assert pixels["canvas_width"] == 128
    assert all(pixels["people"][0][k] == pytest.approx(v) for k, v in person.items())
    drawn = np.asarray(fetch_image(page, first).convert("RGB"))
    assert drawn.shape == (128, 128, 3)
    assert tuple(drawn[74, 38]) == (0, 0, 255)  # the server drew the hands (blue keypoints)

    # select the person (click its nose), mirror it: as mirror_person does it
    canvas = page.locator(f"{EDITOR} canvas")
    page.mouse.click(*on_box(canvas, body[0] / 128, body[1] / 128))
    page.locator(EDITOR).get_by_role("button", name="Mirror").click()
    second = wait_image(page, "#control-unit2-preview", old_src=first)
    mirrored = _export(page)["people"][0]
    expected = mirror_person(pixels["people"][0])
    assert all(mirrored[k] == pytest.approx(v, abs=0.01) for k, v in expected.items())

    # the wheel scales the selected person about its centre
    page.mouse.move(*on_box(canvas, 0.5, 0.5))
    page.mouse.wheel(0, -100)
    scaled = wait_image(page, "#control-unit2-preview", old_src=second)
    big = _export(page)["people"][0]["pose_keypoints_2d"]
    xs = big[0::3]
    assert max(xs) - min(xs) == pytest.approx(1.05 * (max(body[0::3]) - min(body[0::3])),
                                              abs=0.05)
    # Shift+drag a joint moves the whole person: every point by the same 16 px
    page.keyboard.down("Shift")
    drag(page, [on_box(canvas, big[0] / 128, big[1] / 128),
                on_box(canvas, (big[0] + 16) / 128, big[1] / 128)])
    page.keyboard.up("Shift")
    third = wait_image(page, "#control-unit2-preview", old_src=scaled)
    shifted = _export(page)["people"][0]["pose_keypoints_2d"]
    assert [x - old for x, old in zip(shifted[0::3], xs, strict=True)] == pytest.approx(
        [16] * 18, abs=0.5)
    assert shifted[1::3] == pytest.approx(big[1::3], abs=0.5)

    # a file with 17 body points: the server says what is wrong; the editor keeps the pose
    bad = {**POSE, "people": [{"pose_keypoints_2d": body[:51]}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    _import(page, tmp_path / "bad.json")
    toast = page.locator(".toast-body.error").first
    toast.wait_for(state="visible")
    assert "51 numbers; expected 54" in toast.inner_text()
    page.locator(".toast-close").first.click()
    page.locator(".toast-body.error").first.wait_for(state="detached")
    assert _people(page) == 1
    # and the next edit works: remove the person, then undo it
    page.locator(EDITOR).get_by_role("button", name="Remove").click()
    fourth = wait_image(page, "#control-unit2-preview", old_src=third)
    assert _people(page) == 0 and np.asarray(fetch_image(page, fourth)).max() == 0
    page.locator(EDITOR).get_by_role("button", name="Undo").click()
    wait_image(page, "#control-unit2-preview", old_src=fourth)
    assert _people(page) == 1
    # unit 1 turned to openpose shows its own, empty editor
    page.locator("#control-unit1-type input").click()
    page.get_by_role("option", name="openpose").click()
    status = page.locator("#control-unit1-pose-editor .pose-status")
    status.wait_for(state="visible")
    assert status.inner_text().startswith("No pose yet")
    no_error_toast(page)
