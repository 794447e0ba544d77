"""The Outputs tab's logic without a browser: pages, labels, and the click that comes back
from the browser as an index (never a path)."""

from __future__ import annotations

import gradio as gr
import pytest
from PIL import Image

from studio.ui import outputs


@pytest.fixture()
def saved(fresh_studio) -> list[str]:
    """50 saved images, the newest last; their names."""
    store = fresh_studio.outputs
    return [store.name_of(store.save(Image.new("RGB", (8, 8)),
                                     {"task": "txt2img", "prompt": f"shape {i}", "seed": i},
                                     "tiny:base"))
            for i in range(outputs.PAGE_SIZE + 2)]


def test_pages_hold_48_newest_first_and_clamp(fresh_studio, saved):
    shown, names, label, page = outputs.page_view(fresh_studio, "", 0)
    assert len(shown) == len(names) == outputs.PAGE_SIZE and page == 0
    assert set(names) | set(saved[:2]) == set(saved)  # the two oldest are on page 2
    assert label == "Page 1 of 2 · 50 images"
    assert all(path.startswith(str(fresh_studio.outputs.root)) for path, _ in shown)
    shown, names, label, page = outputs.page_view(fresh_studio, None, 7)  # past the end
    assert page == 1 and sorted(names) == sorted(saved[:2]) and label.startswith("Page 2 of 2")
    assert outputs.page_view(fresh_studio, "", -3)[3] == 0


def test_search_and_empty_labels(fresh_studio, saved):
    shown, names, label, _ = outputs.page_view(fresh_studio, "SHAPE 4", 0)
    seeds = sorted(n.split("/")[1].split("-")[3] for n in names)
    assert seeds == ["4", *(str(s) for s in range(40, 50))]
    assert shown[0][1].startswith("shape ") and "(txt2img, seed " in shown[0][1]
    assert outputs.page_view(fresh_studio, "purple", 0)[2] == "No saved image matches “purple”."


def test_a_click_resolves_the_index_on_the_server(fresh_studio, saved):
    names = saved[:3]
    image, params, selected = outputs.selected_item(fresh_studio, names, 1)
    assert image == selected == str(fresh_studio.outputs.root / names[1])
    assert params.startswith("shape 1\n") and "Seed: 1" in params
    for index in (3, -1, "0", None, True, 1.0):
        with pytest.raises(gr.Error, match="no longer on this page"):
            outputs.selected_item(fresh_studio, names, index)


def test_captions_are_short():
    item = {"prompt": "x" * 200, "task": "layout", "seed": 3}
    text = outputs.caption(item)
    assert text.endswith("… (layout, seed 3)") and len(text) < 90
