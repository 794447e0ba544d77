"""The open-vocabulary detector (Grounding DINO): tiny weights load offline through the real
code, boxes come back in the image's pixels at any aspect, and bad input is explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotators import AnnotatorInputError, get_annotator
from annotators.errors import MissingWeightsError, WeightsFormatError
from annotators.grounding import phrases_of


@pytest.fixture(scope="module")
def detector(tiny_sources):
    return get_annotator("grounding", tiny_sources["grounding"], offline=True)


def test_tiny_detector_loads_and_finds_boxes_inside_the_image(detector, photo):
    found = detector.detect(photo, "a cat. the blue square", threshold=0.0)
    assert found and [o["score"] for o in found] == sorted((o["score"] for o in found),
                                                           reverse=True)
    h, w = photo.shape[:2]
    for obj in found:
        x0, y0, x1, y1 = obj["box"]
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert "[SEP]" not in obj["label"] and "." not in obj["label"]
    assert detector.detect(photo, "a cat", threshold=1.0) == []  # nothing scores above 1


class _Placed(torch.nn.Module):
    """A stand-in detector whose one confident query sits at a known normalised box."""

    def __init__(self, box: list[float]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.box = box

    def forward(self, input_ids: torch.Tensor, **_: object) -> object:
        from transformers.models.grounding_dino.modeling_grounding_dino import (
            GroundingDinoObjectDetectionOutput,
        )

        logits = torch.full((1, 5, 256), -20.0)
        logits[0, 0, 1:input_ids.shape[1] - 1] = 20.0  # query 0: every word of the text
        boxes = torch.tensor([[self.box] * 5])
        return GroundingDinoObjectDetectionOutput(logits=logits, pred_boxes=boxes)


@pytest.mark.parametrize("size", [(640, 360), (360, 640), (200, 200)])
def test_boxes_are_in_the_images_own_pixels_at_any_aspect(detector, size):
    w, h = size
    placed = type(detector)(_Placed([0.25, 0.5, 0.2, 0.4]), detector.processor)  # cx cy w h
    found = placed.detect(np.zeros((h, w, 3), np.uint8), "the cat", threshold=0.5)
    assert len(found) == 1 and found[0]["label"] == "the cat"
    assert found[0]["box"] == pytest.approx([0.15 * w, 0.3 * h, 0.35 * w, 0.7 * h], abs=0.1)


@pytest.mark.parametrize(("text", "message"), [
    ("", "Say what to select"),
    (" . . ", "names nothing"),
    (". ".join(["a cat"] * 17), "at most 16"),
    (None, "Say what to select"),
])
def test_bad_text_is_explained(text, message):
    with pytest.raises(AnnotatorInputError, match=message):
        phrases_of(text)


def test_bad_threshold_is_explained(detector, photo):
    with pytest.raises(AnnotatorInputError, match="threshold"):
        detector.detect(photo, "a cat", threshold=1.5)


def test_wrong_or_missing_weights_are_explained(tiny_sources, tmp_path):
    with pytest.raises(WeightsFormatError, match="not a Grounding DINO detector"):
        get_annotator("grounding", tiny_sources["depth"], offline=True)
    with pytest.raises(WeightsFormatError, match="not a single file"):
        get_annotator("grounding", tiny_sources["sam"], offline=True)
    with pytest.raises(MissingWeightsError, match="not available offline"):
        get_annotator("grounding", "IDEA-Research/no-such-detector",
                      cache_dir=tmp_path, offline=True)
