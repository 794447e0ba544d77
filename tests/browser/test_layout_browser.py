"""Layout tab as a person uses it: drag two boxes on the canvas, name them, generate."""

from __future__ import annotations

import json

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


def draw_box(page, canvas, start: tuple[float, float], end: tuple[float, float],
             phrase: str) -> None:
    """Drag a box (corners as fractions of the canvas), then type its phrase in the dialog."""
    drag(page, [on_box(canvas, *start), on_box(canvas, *end)])
    label = page.locator("input[aria-label=Label]").locator("visible=true")
    label.fill(phrase)
    page.get_by_role("button", name="OK", exact=True).locator("visible=true").click()
    label.wait_for(state="hidden")


def test_draw_two_boxes_with_phrases_then_generate(page):
    open_tab(page, "Layout")
    page.locator("#layout-prompt textarea").fill("a park")
    canvas = page.locator("#layout-canvas canvas").first
    # the 512 x 512 blank page sits centred in a wider canvas element
    draw_box(page, canvas, (0.3, 0.2), (0.45, 0.5), "a red bird")
    draw_box(page, canvas, (0.55, 0.5), (0.75, 0.9), "a bench")
    page.get_by_text("Boxes and image as the API takes them").click()
    drawn = json.loads(page.locator("#layout-boxes textarea").input_value())
    assert sorted(b["phrase"] for b in drawn) == ["a bench", "a red bird"]

    open_settings(page)
    set_number(page, "layout-steps", 2)
    set_number(page, "layout-width", 64)
    set_number(page, "layout-height", 64)
    set_number(page, "layout-gligen_fraction", 0.5)  # at least one grounded step of 2
    # leaving the size boxes refits the blank canvas to the output's aspect; a 64 px output
    # still gets a canvas big enough to draw on, and the boxes keep their place
    page.locator("#layout-height input[type=number]").press("Tab")
    page.wait_for_function(
        "() => document.querySelector('#layout-canvas canvas').getBoundingClientRect().height"
        " > 300")
    page.locator("#layout-generate").click()
    result = fetch_image(page, wait_image(page, "#layout-result"))
    assert result.size == (64, 64)
    sent = json.loads(page.locator("#layout-boxes textarea").input_value())
    by_phrase = {b["phrase"]: b["box"] for b in sent}
    assert set(by_phrase) == {"a bench", "a red bird"}
    for b in drawn:  # the resize kept each box where it was drawn (within a canvas pixel)
        assert by_phrase[b["phrase"]] == pytest.approx(b["box"], abs=0.02)
    bird, bench = by_phrase["a red bird"], by_phrase["a bench"]
    assert bird[2] < bench[0] and bird[1] < bench[1]  # bird left of and above the bench
    no_error_toast(page)
