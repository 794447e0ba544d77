"""Masks from words on the tiny set: detector boxes -> SAM -> union, aligned with the image's
pixels; nothing found, empty text and bad thresholds are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.backend.requests import RequestError
from studio.backend.tasks.inpaint import binary_array
from studio.backend.tasks.text_mask import mask_from_boxes, text_mask


@pytest.fixture()
def wide() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (90, 160, 3), np.uint8))


def test_text_mask_has_the_images_size_and_lists_what_it_found(studio, wide):
    mask, info = text_mask(studio, wide, "the cat. a dog", threshold=0.0)
    assert mask.size == wide.size and mask.mode == "L"
    assert len(info["boxes"]) == len(info["labels"]) == len(info["scores"]) > 0
    assert info["size"] == [160, 90] and info["mask_pixels"] == int(binary_array(mask).sum())


def test_the_mask_is_the_union_of_sams_masks_for_the_boxes(studio, wide, monkeypatch):
    boxes = [[10, 10, 60, 50], [100, 20, 150, 80]]
    monkeypatch.setattr(studio.annotators, "detect", lambda img, text, thr: [
        {"box": b, "label": "the cat", "score": 0.9 - i / 10} for i, b in enumerate(boxes)])
    mask, info = text_mask(studio, wide, "the cat")
    each = [binary_array(mask_from_boxes(studio, wide, [b])) for b in boxes]
    assert np.array_equal(binary_array(mask), each[0] | each[1])
    assert info["boxes"] == boxes and info["labels"] == ["the cat"] * 2
    assert not binary_array(mask_from_boxes(studio, wide, [])).any()


def test_nothing_found_names_the_text_and_threshold(studio, wide, monkeypatch):
    monkeypatch.setattr(studio.annotators, "detect", lambda img, text, thr: [])
    with pytest.raises(RequestError, match=r"nothing matching 'the unicorn' was found at "
                                           r"threshold 0.4: lower the threshold \(e.g. 0.2\)"):
        text_mask(studio, wide, "the unicorn", threshold=0.4)


@pytest.mark.parametrize(("text", "threshold", "message"), [
    ("", 0.3, "text is empty"),
    ("  . ", 0.3, "text is empty"),
    (None, 0.3, "text is empty"),
    ("the cat", 1.5, "threshold"),
    ("the cat", -0.1, "threshold"),
    ("the cat", "high", "threshold"),
])
def test_bad_requests_are_explained(studio, wide, text, threshold, message):
    with pytest.raises(RequestError, match=message):
        text_mask(studio, wide, text, threshold)
