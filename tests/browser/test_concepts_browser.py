"""Concepts tab as a person uses it: three pictures, a name, a short textual inversion, the
library lists it. Widgets are found by their labels (the tab has no elem_ids).

The studio here keeps its library where users' studios do by default, under ~/.cache (not the
temp folder, not the working directory), so the library's pictures must reach the page without
gradio serving that folder."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.support.serve import serving

from .conftest import block, no_error_toast, open_tab, set_slider, wait_image

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def library_studio(tiny_settings, tiny_model_set, tmp_path_factory):
    from studio.backend.service import Studio

    library = Path.home() / ".cache" / f"controllable-studio-test-{uuid.uuid4().hex[:8]}"
    settings = replace(tiny_settings, outputs_dir=tmp_path_factory.mktemp("lib-outputs"),
                       concepts_dir=library / "concepts")
    try:
        yield Studio(settings, model_set=tiny_model_set)
    finally:
        shutil.rmtree(library, ignore_errors=True)


@pytest.fixture(scope="module")
def app_url(library_studio):
    """This module's pages open a studio whose library is in the home cache."""
    with serving(library_studio) as url:
        yield url


@pytest.fixture()
def pictures(tmp_path):
    paths = []
    for i, colour in enumerate([(200, 40, 40), (190, 50, 40), (210, 40, 60)]):
        im = Image.new("RGB", (96, 96), (240, 240, 230))
        ImageDraw.Draw(im).ellipse((20 + 4 * i, 20, 70, 76), fill=colour)
        paths.append(tmp_path / f"blob{i}.png")
        im.save(paths[-1])
    return paths


def test_learn_a_concept_and_see_it_in_the_library(page, pictures, library_studio):
    studio = library_studio
    name = f"blob-{uuid.uuid4().hex[:6]}"
    assert not str(studio.concepts_dir).startswith((tempfile.gettempdir(), os.getcwd()))
    try:
        open_tab(page, "Concepts")
        page.get_by_label("Name (its token in prompts: <name>)").fill(name)
        block(page, "3-20 pictures").locator("input[type=file]").set_input_files(
            [str(p) for p in pictures])
        crops = block(page, "As used (centre-cropped)").locator("img")
        crops.nth(2).wait_for(state="visible")
        assert crops.count() == 3
        assert page.get_by_label("textual_inversion").is_checked()
        steps = page.get_by_label("Steps (0 = default)", exact=True)
        steps.fill("3")
        page.get_by_text("Method options", exact=True).click()
        set_slider(page, "Training resolution", 64)
        set_slider(page, "Batch size", 1)
        set_slider(page, "Preview steps (0 = no preview)", 1)
        result_id = _ensure_id(block(page, "Result"))
        page.get_by_role("button", name="Learn it").click()
        wait_image(page, f"#{result_id}")  # the preview drawn with the new token
        no_error_toast(page)

        page.get_by_role("tab", name="Library").click()
        row = page.locator("tr", has_text=f"<{name}>").locator("visible=true")
        row.wait_for()
        assert re.search(r"textual_inversion\s+trained\s+3", row.inner_text())
        page.get_by_role("button", name="Refresh").click()
        thumbs = block(page, "Concepts").locator("img")
        thumbs.first.wait_for(state="visible")  # the library's pictures reach the page
        assert thumbs.count() >= 1
        no_error_toast(page)
    finally:
        if any(c["name"] == name for c in studio.list_concepts()):
            studio.concepts.delete(name)


def _ensure_id(locator) -> str:
    """Give a block without an elem_id a temporary id so id-based helpers can wait on it."""
    return locator.evaluate(
        "el => { if (!el.id) el.id = 'test-' + Math.random().toString(36).slice(2); "
        "return el.id; }")
