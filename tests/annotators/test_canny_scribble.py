"""Canny and scribble: maps land where the drawing/photo has edges or lines."""

from __future__ import annotations

import numpy as np
import pytest

from annotators import AnnotatorInputError, get_annotator


def test_canny_edges_follow_the_square():
    img = np.zeros((512, 512, 3), np.uint8)
    img[128:384, 160:352] = 255  # white rectangle on black
    out = get_annotator("canny")(img, detect_resolution=512, image_resolution=512)
    edges = np.asarray(out)
    assert out.size == (512, 512) and out.mode == "RGB"
    on = edges[..., 0] > 0
    ys, xs = np.nonzero(on)
    # every edge pixel sits within 2 px of the rectangle's border...
    near_border = (
        (np.abs(ys - 128) <= 2) | (np.abs(ys - 383) <= 2) | (np.abs(xs - 160) <= 2)
        | (np.abs(xs - 351) <= 2)
    )
    assert on.sum() > 800 and near_border.all()
    # ...and each side of the rectangle is found along its whole length
    for row in (128, 383):
        assert on[row - 2:row + 3, 170:340].any(axis=0).all()
    for col in (160, 351):
        assert on[140:370, col - 2:col + 3].any(axis=1).all()
    assert not on[200:300, 200:300].any() and not on[:100].any()


def test_canny_size_and_thresholds(photo):
    canny = get_annotator("canny")
    out = canny.annotate(photo, 512, 768)
    assert out.image.size == (1344, 768) and out.info["size"] == [1344, 768]
    loose = np.asarray(canny(photo, 512, 512, low_threshold=10, high_threshold=30)).sum()
    strict = np.asarray(canny(photo, 512, 512, low_threshold=200, high_threshold=250)).sum()
    assert loose > strict
    with pytest.raises(AnnotatorInputError, match="low_threshold"):
        canny(photo, low_threshold=200, high_threshold=100)
    with pytest.raises(AnnotatorInputError, match="high_threshold must be between"):
        canny(photo, high_threshold=300)


def _canvas(bg: int, ink: int) -> np.ndarray:
    img = np.full((256, 384, 3), bg, np.uint8)
    img[100:103, 40:340] = ink  # a 3 px horizontal stroke
    img[20:230, 200:201] = ink  # a 1 px vertical stroke
    return img


@pytest.mark.parametrize("bg, ink", [(255, 0), (0, 255), (240, 40)])
def test_scribble_is_white_lines_on_black_for_any_polarity(bg, ink):
    out = get_annotator("scribble")(_canvas(bg, ink), image_resolution=512)
    arr = np.asarray(out)
    assert out.size == (768, 512)
    assert set(np.unique(arr)) == {0, 255}  # binary
    lines = arr[..., 0] == 255
    # strokes scaled by 2: horizontal at rows 200-206, the 1 px vertical one survives at x~400
    assert lines[203, 100:660].all()
    assert lines[60:440, 398:403].any(axis=1).all()
    assert not lines[:150, :350].any()


def test_scribble_transparent_layer_and_thickness():
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[128, 20:230] = (30, 200, 90, 255)  # coloured 1 px stroke on a transparent layer
    scribble = get_annotator("scribble")
    thin = np.asarray(scribble(rgba, image_resolution=256))[..., 0] == 255
    thick = np.asarray(scribble(rgba, image_resolution=256, thickness=3))[..., 0] == 255
    assert thin[128, 30:220].all() and thin.sum() < 2 * 210
    assert thick[125:132, 30:220].all() and thick.sum() > 6 * 210


def test_scribble_errors():
    scribble = get_annotator("scribble")
    with pytest.raises(AnnotatorInputError, match="no lines"):
        scribble(np.full((64, 64, 3), 255, np.uint8))
    with pytest.raises(AnnotatorInputError, match="line_color must be one of"):
        scribble(_canvas(255, 0), line_color="blue")
