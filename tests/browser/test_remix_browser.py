"""Remix tab as a person uses it: two pictures, an interpolation strip of 5, a text diff, and
a bad weight list that gets a clear message while the tab keeps working."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from .conftest import ERROR_TOAST, no_error_toast, open_settings, open_tab, set_slider, wait_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture()
def two_pictures(tmp_path):
    paths = []
    for i, (colour, shape) in enumerate([((220, 30, 30), "ellipse"), ((30, 30, 220), "rect")]):
        im = Image.new("RGB", (96, 96), (235, 235, 225))
        getattr(ImageDraw.Draw(im), {"ellipse": "ellipse", "rect": "rectangle"}[shape])(
            (20, 20, 76, 76), fill=colour)
        paths.append(tmp_path / f"pic{i}.png")
        im.save(paths[-1])
    return paths


def _type(page, elem_id: str, text: str) -> None:
    """Fill a textbox and leave it, until the page keeps the value: a fill right after an
    accordion opens can land on a box that is then drawn again, empty."""
    box = page.locator(f"#{elem_id} textarea")
    for _ in range(10):
        box.wait_for(state="visible")
        box.fill(text)
        box.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == text:
            return
    raise AssertionError(f"{elem_id} does not keep the text {text!r}")


def _small_settings(page) -> None:
    open_settings(page)
    set_slider(page, "Steps", 2)
    set_slider(page, "Width", 64)
    set_slider(page, "Height", 64)


def test_two_pictures_a_strip_of_five_and_a_text_diff(page, two_pictures):
    open_tab(page, "Remix")
    page.locator("#remix-images input[type=file]").set_input_files([str(p) for p in two_pictures])
    thumbs = page.locator("#remix-thumbs img")
    thumbs.nth(1).wait_for(state="visible")
    assert thumbs.count() == 2
    _small_settings(page)

    page.get_by_text("Interpolation strip (picture 1 -> picture 2, one seed)").click()
    set_slider(page, "Images in the strip", 5)
    page.locator("#remix-strip").click()
    strip = page.locator("#remix-strip-gallery img")
    page.wait_for_function(
        "([sel, toast]) => document.querySelector(toast) || "
        "document.querySelectorAll(sel).length >= 5",
        arg=["#remix-strip-gallery img", ERROR_TOAST], timeout=120_000)
    no_error_toast(page)
    assert strip.count() == 5

    old = page.locator("#remix-result img").first.get_attribute("src")
    _type(page, "remix-weights", "[1, 0]")
    page.get_by_text("Text diff (move the picture from one caption to another)").click()
    _type(page, "remix-text_from", "a red circle")
    _type(page, "remix-text_to", "a blue circle")
    page.wait_for_timeout(500)
    page.locator("#remix-generate").click()
    wait_image(page, "#remix-result", old_src=old)
    page.get_by_text("Info (JSON)").locator("visible=true").first.click()
    assert '"text_diff_cosine"' in page.locator("#remix-info").inner_text()


def test_a_bad_weight_list_is_explained_and_the_tab_still_works(page, two_pictures):
    open_tab(page, "Remix")
    page.locator("#remix-images input[type=file]").set_input_files([str(p) for p in two_pictures])
    page.locator("#remix-thumbs img").nth(1).wait_for(state="visible")
    _small_settings(page)
    _type(page, "remix-weights", "[1]")
    page.wait_for_timeout(500)
    page.locator("#remix-generate").click()
    toast = page.locator(ERROR_TOAST).first
    toast.wait_for(state="visible")
    assert "one weight per image" in toast.inner_text()
    page.locator(".toast-close").first.click()
    page.locator(ERROR_TOAST).first.wait_for(state="detached")  # the old message is gone
    _type(page, "remix-weights", "")
    page.wait_for_timeout(500)
    page.locator("#remix-generate").click()
    wait_image(page, "#remix-result")
