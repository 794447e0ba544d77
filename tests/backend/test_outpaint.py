"""Outpainting on the tiny sets: the canvas grows, the original stays exact, the seam fades
in outside it, the request regenerates, bad sides are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.backend.requests import RequestError
from studio.backend.tasks.outpaint import (
    extend_canvas,
    extend_sides,
    extend_to_ratio_text,
    fill_transparent,
    seam_alpha,
)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8))


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("mode", ["inpaint", "blend"])
def test_original_pixels_are_exact_and_the_new_area_is_painted(studio, mode) -> None:
    image = _image(64, 64)
    res = studio.outpaint({"image": image, "left": 16, "right": 0, "top": 8, "bottom": 24,
                           "prompt": "a red ball", "seed": 3, "steps": 2, "mode": mode})
    out = _px(res.image)
    assert res.image.size == (64 + 16, 64 + 8 + 24)
    assert (out[8:72, 16:80] == _px(image)).all()
    info = res.info
    assert info["original_box"] == [16, 8, 80, 72] and info["canvas"] == [80, 96]
    assert info["mode_run"] == mode and info["work_size"] == [80, 96]
    # beyond the feather (8 px) the new area is the model's, not the colour fill
    canvas, _ = extend_canvas(image, 16, 0, 8, 24)
    far = (_px(canvas)[80:, :].astype(int) - out[80:, :].astype(int))
    assert np.abs(far).mean() > 2


def test_a_seed_reproduces_and_regenerate_matches(studio) -> None:
    req = {"image": _image(64, 48, 1), "right": 32, "prompt": "a cat", "seed": 5, "steps": 2}
    a, b = studio.outpaint(dict(req)), studio.outpaint(dict(req))
    assert (_px(a.image) == _px(b.image)).all()
    again = studio.regenerate(str(a.path))
    assert (_px(again.image) == _px(a.image)).all()
    assert again.info["request"]["right"] == 32 and again.info["task"] == "outpaint"


def test_seam_fades_in_outside_the_original_only() -> None:
    alpha = seam_alpha((40, 20), (10, 0, 30, 20), feather=8)
    assert (alpha[:, 10:30] == 0).all()
    assert alpha[0, 9] < 0.1 and alpha[0, 1] == 1.0 and alpha[0, 5] == pytest.approx(0.5, abs=0.15)
    assert (np.diff(alpha[0, :10][::-1]) >= 0).all()  # rises away from the original
    hard = seam_alpha((40, 20), (10, 0, 30, 20), feather=0)
    assert set(np.unique(hard)) == {0.0, 1.0} and hard[0, 9] == 1.0


def test_fill_continues_the_edge_colours_and_keeps_the_visible_pixels() -> None:
    left = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    left.paste((200, 30, 30, 255), (0, 0, 20, 20))
    out = _px(fill_transparent(left))
    assert (out[:, :20] == [200, 30, 30]).all()
    assert abs(int(out[10, 25, 0]) - 200) < 30  # next to the red edge: still red
    canvas, mask = extend_canvas(Image.new("RGB", (20, 20), (10, 200, 10)), 0, 20, 0, 0)
    assert canvas.size == mask.size == (40, 20)
    assert (np.asarray(mask)[:, 20:] == 255).all() and (np.asarray(mask)[:, :20] == 0).all()


def test_aspect_ratio_sides() -> None:
    assert extend_sides((512, 512), 16 / 9) == {"left": 199, "right": 199, "top": 0,
                                                "bottom": 0}
    assert extend_sides((640, 480), 1.0) == {"left": 0, "right": 0, "top": 80, "bottom": 80}
    assert extend_to_ratio_text((100, 100), "2:1")["right"] == 50
    with pytest.raises(RequestError, match="16:9"):
        extend_to_ratio_text((100, 100), "wide")


@pytest.mark.parametrize(("change", "words"), [
    ({"left": 0, "right": 0, "top": 0, "bottom": 0}, "nothing to extend"),
    ({"left": -8}, "left (pixels to add) must be between 0 and 2048"),
    ({"right": 4096}, "right (pixels to add) must be between 0 and 2048"),
    ({"top": 2.5}, "top (pixels to add) must be a whole number"),
    ({"bottom": float("nan")}, "bottom (pixels to add) must be a finite number"),
    ({"mode": "magic"}, "unknown mode 'magic'"),
    ({"left": 2048, "right": 2048, "image": Image.new("RGB", (7000, 64))},
     "the extended canvas would be 11096x64"),
])
def test_bad_outpaint_requests_say_what_is_wrong(studio, change, words) -> None:
    req = {"image": _image(64, 64), "right": 16, "prompt": "x", "steps": 2, **change}
    with pytest.raises(RequestError, match=words.replace("(", r"\(").replace(")", r"\)")):
        studio.outpaint(req)
