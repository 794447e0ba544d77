"""Live previews in the browser, in the toy world: the image forms before your eyes, then the
final one stays; small images show enlarged, pixel for pixel."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from tests.support.serve import serving

from .conftest import fetch_image, no_error_toast, open_tab, set_number

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Every src the result image shows, recorded in the page (previews replace each other fast).
WATCH = """() => {
    window.seenSrcs = [];
    const root = document.querySelector('#txt2img-result');
    const note = () => root.querySelectorAll('img').forEach(img => {
        const src = img.getAttribute('src');
        if (src && window.seenSrcs[window.seenSrcs.length - 1] !== src) window.seenSrcs.push(src);
    });
    new MutationObserver(note).observe(root, {subtree: true, childList: true,
                                              attributes: true, attributeFilter: ['src']});
}"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The studio on the trained toy models, previews at most every 50 ms."""
    from studio.ui.app import page_style
    from toyworld.evaluate import toy_studio

    studio = toy_studio(work=tmp_path_factory.mktemp("toy-previews"))
    studio.settings = replace(studio.settings, preview_interval=0.05)
    with serving(studio, **page_style(studio)) as url:
        yield url


def test_previews_show_while_the_image_forms_then_the_final_image(page):
    open_tab(page, "Text to image")
    page.locator("#txt2img-prompt textarea").fill("a red circle and a blue square")
    page.get_by_text("Generation settings").first.click()
    set_number(page, "txt2img-steps", 25)
    set_number(page, "txt2img-seed", 7)
    page.evaluate(WATCH)
    page.locator("#txt2img-generate").click()
    page.wait_for_function(  # the final image is the saved PNG
        "() => window.seenSrcs.some(s => s.endsWith('.png')) || document.querySelector("
        "'.toast-body.error')", timeout=120_000)
    no_error_toast(page)
    seen = page.evaluate("window.seenSrcs")
    final = page.locator("#txt2img-result img").first.get_attribute("src")
    previews = [s for s in seen if s != final]
    assert len(previews) >= 3, seen
    assert all(s.endswith((".jpeg", ".jpg")) for s in previews), previews
    assert seen[-1] == final and final.endswith(".png")
    image = fetch_image(page, final)
    assert image.size == (64, 64)  # the file itself keeps its true size
    shown = page.locator("#txt2img-result img").first.bounding_box()
    assert shown["width"] >= 256 and shown["height"] >= 256  # ...and shows enlarged
    rendering = page.locator("#txt2img-result img").first.evaluate(
        "img => getComputedStyle(img).imageRendering")
    assert rendering == "pixelated"
