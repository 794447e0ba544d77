"""The Instruct tab's tool router: "mark the blue square in red" is answered by a text mask
and an overlay, in the toy world (trained detector and SAM), without loading a UNet; other
instructions, and any with tools off, go to InstructPix2Pix; bad colours are explained."""

from __future__ import annotations

import numpy as np
import pytest

from studio.backend.requests import RequestError
from studio.backend.tasks.instruct_tools import MARK_COLOURS, OPACITY, overlay, route
from toyworld.scenes import Scene, Shape

SCENE = Scene([Shape("circle", "red", 18, 20, 22), Shape("square", "blue", 44, 42, 22)])


@pytest.mark.parametrize(("instruction", "plan"), [
    ("mark the blue square in red", ("mark", "the blue square", "red")),
    ("Highlight the cat.", ("highlight", "the cat", "red")),
    ("please outline the dog with green", ("outline", "the dog", "green")),
    ("mark the cat in the box", ("mark", "the cat in the box", "red")),
    ("mark a cat. a bowl in yellow", ("mark", "a cat. a bowl", "yellow")),
])
def test_mark_instructions_are_routed(instruction, plan):
    got = route(instruction)
    assert got is not None and (got.verb, got.what, got.colour) == plan


@pytest.mark.parametrize("instruction", ["make it winter", "turn the cat into a fox",
                                         "remark on the sky", "", "mark"])
def test_other_instructions_go_to_the_model(instruction):
    assert route(instruction) is None


def test_an_unknown_colour_is_explained():
    with pytest.raises(RequestError, match="'teal' is not a colour the marker knows; use one"):
        route("mark the cat in teal")


def test_overlay_changes_only_the_mask():
    image = SCENE.render()
    mask = SCENE.mask(1)
    out = np.asarray(overlay(image, mask, (255, 0, 0))).astype(int)
    before = np.asarray(image).astype(int)
    assert np.array_equal(out[~mask], before[~mask])
    expected = np.rint((1 - OPACITY) * before[mask] + OPACITY * np.array([255, 0, 0]))
    assert np.abs(out[mask] - expected).max() <= 1
    rim = np.asarray(overlay(image, mask, (255, 0, 0), outline_only=True)).astype(int)
    changed = (rim != before).any(-1)
    assert changed.any() and not changed[~mask].any() and changed.sum() < mask.sum() / 2


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from toyworld.evaluate import toy_studio

    return toy_studio(work=tmp_path_factory.mktemp("instruct-tools"))


def _instruct(studio, instruction: str, **kw):
    return studio.run("instruct", {"image": SCENE.render(), "prompt": instruction, "seed": 1,
                                   "steps": 2, **kw})


def test_mark_the_blue_square_in_red_without_the_model(toy):
    result = _instruct(toy, "mark the blue square in red")
    assert result.info["tool"] == "mark" and result.info["colour"] == "red"
    assert result.info["labels"] == ["the blue square"]
    assert not any("unet" in k for k in toy.registry.loaded_keys())  # no model ran
    out, before = np.asarray(result.image).astype(int), np.asarray(SCENE.render()).astype(int)
    square, circle = SCENE.mask(1), SCENE.mask(0)
    assert np.array_equal(out[circle], before[circle])  # the circle is untouched
    marked = (out != before).any(-1)
    assert (marked & square).sum() >= 0.9 * square.sum()
    assert (marked & ~square).sum() <= 0.05 * square.sum()
    red = np.asarray(MARK_COLOURS["red"])
    assert np.abs(out[square] - red).sum(-1).mean() < np.abs(before[square] - red).sum(-1).mean()
    again = _instruct(toy, "mark the blue square in red")
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))


def test_with_tools_off_the_model_answers(toy):
    result = _instruct(toy, "mark the blue square in red", tools=False)
    assert "tool" not in result.info
    assert result.info["request"]["tools"] is False
    assert any("unet" in k for k in toy.registry.loaded_keys())


def test_nothing_to_mark_is_explained_and_the_next_request_works(toy):
    with pytest.raises(RequestError, match="nothing matching 'the green triangle'"):
        _instruct(toy, "mark the green triangle")
    assert _instruct(toy, "outline the red circle in blue").info["tool"] == "outline"
