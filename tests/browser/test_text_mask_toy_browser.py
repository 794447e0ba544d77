"""Words that select, in the toy world (trained detector and SAM): Edit's "Describe it"
finds "the blue square", shows its box and inpaints only it; the Instruct tab's tools answer
"mark the blue square in red" with an overlay on just that shape."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.support.serve import serving

from .conftest import (
    block,
    fetch_image,
    no_error_toast,
    open_settings,
    open_tab,
    set_number,
    wait_image,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The studio on the trained toy models (toy SAM and toy detector)."""
    from toyworld.evaluate import toy_studio

    with serving(toy_studio(work=tmp_path_factory.mktemp("toy-text-mask"))) as url:
        yield url


def test_the_blue_square_is_found_and_only_it_is_repainted(page, tmp_path):
    from toyworld.scenes import Scene, Shape

    scene = Scene([Shape("circle", "red", 18, 20, 22), Shape("square", "blue", 44, 42, 22)])
    photo = tmp_path / "scene.png"
    scene.render().save(photo)
    open_tab(page, "Edit")
    page.locator("#edit-image input[type=file]").set_input_files(str(photo))
    page.locator("#edit-image img").wait_for(state="visible")
    page.get_by_role("tab", name="Describe it").click()
    page.locator("#edit-text textarea").fill("the blue square")
    page.locator("#edit-find").click()
    mask = np.asarray(fetch_image(page, wait_image(page, "#edit-mask")).convert("L")) > 127
    truth = scene.mask(1)
    iou = (mask & truth).sum() / max(1, (mask | truth).sum())
    assert iou >= 0.6, f"the mask is not the blue square (IoU {iou:.2f})"
    page.locator("#edit-boxes img").first.wait_for(state="visible")
    assert "square" in page.locator("#edit-objects").inner_text()

    page.locator("#edit-prompt textarea").fill("a green square")
    open_settings(page)
    set_number(page, "edit-steps", 20)
    page.locator("#edit-generate").click()
    result = np.asarray(fetch_image(page, wait_image(page, "#edit-result")).convert("RGB"))
    original = np.asarray(scene.render())
    assert np.array_equal(result[~mask], original[~mask]), "pixels outside the mask changed"
    assert np.array_equal(result[scene.mask(0)], original[scene.mask(0)]), "the circle changed"
    no_error_toast(page)


def test_instruct_marks_the_blue_square_in_red(page, tmp_path):
    from toyworld.scenes import Scene, Shape

    scene = Scene([Shape("circle", "red", 18, 20, 22), Shape("square", "blue", 44, 42, 22)])
    photo = tmp_path / "scene.png"
    scene.render().save(photo)
    open_tab(page, "Instruct")
    source = block(page, "Image to edit (Edit starts from this)")
    source.locator("input[type=file]").set_input_files(str(photo))
    source.locator("img").wait_for(state="visible")
    strip = block(page, "Edit history (click a version to go back to it)")
    strip.locator("img").first.wait_for(state="visible")
    assert page.get_by_label("Tools").locator("visible=true").is_checked()
    page.get_by_label("Instruction").locator("visible=true").fill("mark the blue square in red")
    page.get_by_role("button", name="Edit", exact=True).click()
    strip.locator("img").nth(1).wait_for(state="visible")
    no_error_toast(page)
    out = np.asarray(fetch_image(page, strip.locator("img").nth(1).get_attribute("src"))
                     .convert("RGB")).astype(int)
    before = np.asarray(scene.render()).astype(int)
    square = scene.mask(1)
    changed = (out != before).any(-1)
    assert changed[square].mean() >= 0.9, "the square is not marked"
    assert not changed[scene.mask(0)].any(), "the circle changed"
    assert (out[square][:, 0] > before[square][:, 0] + 50).mean() >= 0.9, "not marked in red"
