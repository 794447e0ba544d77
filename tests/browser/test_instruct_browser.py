"""Instruct tab as a person uses it: upload, say what to change, edit, edit the result again.

The tab's widgets have no elem_ids; they are found by their labels and button names.
"""

from __future__ import annotations

import pytest

from .conftest import block, no_error_toast, open_settings, open_tab, set_slider

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HISTORY = "Edit history (click a version to go back to it)"


def status_line(page) -> str:
    return page.get_by_text("Showing", exact=False).locator("visible=true").first.inner_text()


def test_edit_then_edit_the_result_again(page, photo):
    open_tab(page, "Instruct")
    source = block(page, "Image to edit (Edit starts from this)")
    source.locator("input[type=file]").set_input_files(str(photo))
    source.locator("img").wait_for(state="visible")
    strip = block(page, HISTORY)
    strip.locator("img").first.wait_for(state="visible")  # v0, the original
    instruction = page.get_by_label("Instruction").locator("visible=true")
    open_settings(page)
    set_slider(page, "Steps", 2)
    set_slider(page, "Max side", 64)

    instruction.fill("make it winter")
    page.get_by_role("button", name="Edit", exact=True).click()
    strip.locator("img").nth(1).wait_for(state="visible")
    no_error_toast(page)
    assert "Showing v1" in status_line(page)

    instruction.fill("add snow")
    page.get_by_role("button", name="Edit the result again").click()
    strip.locator("img").nth(2).wait_for(state="visible")
    no_error_toast(page)
    assert strip.locator("img").count() == 3
    text = strip.inner_text()
    for label in ("v0 original", "v1: make it winter", "▶ v2: add snow"):
        assert label in text
    sources = [strip.locator("img").nth(i).get_attribute("src") for i in range(3)]
    assert len(set(sources)) == 3, "each version is its own image"
    status = status_line(page)
    assert "Showing v2 (history v0-v2)" in status and "Edit starts from v1" in status

    # going back: click v1 in the strip; it becomes current and "again" would drop v2
    strip.locator("img").nth(1).click()
    page.get_by_text("Showing v1", exact=False).locator("visible=true").first.wait_for()
    assert "drops v2" in status_line(page)
    no_error_toast(page)
