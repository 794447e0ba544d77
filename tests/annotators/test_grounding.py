"""The open-vocabulary detector (Grounding DINO, or OWL-ViT / OWLv2): tiny weights load
offline through the real code, boxes come back in the image's pixels at any aspect, one
object gives one box, and bad input is explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from annotators import AnnotatorInputError, get_annotator
from annotators.errors import MissingWeightsError, WeightsFormatError
from annotators.grounding import nms, phrases_of


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


class _OwlPlaced(torch.nn.Module):
    """A stand-in OWL-ViT / OWLv2: patch 3 scores its one query high, at a known box (in
    the processor's normalised frame); the other patches are at the same box, unsure."""

    def __init__(self, kind: str, box: list[float]) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(model_type=kind)
        self.box = box

    def forward(self, input_ids: torch.Tensor, **_: object) -> object:
        from transformers.models.owlvit.modeling_owlvit import OwlViTObjectDetectionOutput

        logits = torch.full((1, 16, input_ids.shape[0]), -20.0)
        logits[0, 3, 0] = 20.0
        logits[0, 4, 0] = 1.0  # a duplicate of the same object, less sure: merged by NMS
        return OwlViTObjectDetectionOutput(logits=logits,
                                           pred_boxes=torch.tensor([[self.box] * 16]))


def _owl_processor(kind: str) -> object:
    import tempfile
    from pathlib import Path

    from transformers import (
        CLIPTokenizer,
        Owlv2ImageProcessor,
        Owlv2Processor,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    from studio.backend.models.tokenizer_vocab import write_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp), ("the", "cat"))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=16)
    if kind == "owlv2":
        return Owlv2Processor(image_processor=Owlv2ImageProcessor(
            size={"height": 32, "width": 32}), tokenizer=tokenizer)
    return OwlViTProcessor(image_processor=OwlViTImageProcessor(
        size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer)


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
@pytest.mark.parametrize("size", [(640, 360), (360, 640)])
def test_owl_boxes_are_in_the_images_own_pixels_at_any_aspect(detector, kind, size):
    w, h = size
    # OWL-ViT stretches the image to its square; OWLv2 pads it (bottom, right) to a square
    fw, fh = (1.0, 1.0) if kind == "owlvit" else (w / max(w, h), h / max(w, h))
    box = [0.25 * fw, 0.5 * fh, 0.2 * fw, 0.4 * fh]  # the object's cx cy w h in that frame
    placed = type(detector)(_OwlPlaced(kind, box), _owl_processor(kind))
    found = placed.detect(np.zeros((h, w, 3), np.uint8), "the cat. a dog", threshold=0.5)
    assert len(found) == 1 and found[0]["label"] == "the cat"
    assert found[0]["box"] == pytest.approx([0.15 * w, 0.3 * h, 0.35 * w, 0.7 * h], abs=0.1)
    assert len(placed.detect(np.zeros((h, w, 3), np.uint8), "the cat", threshold=0.1)) == 1


def test_nms_merges_one_labels_overlapping_boxes_only():
    objs = [{"box": [0, 0, 10, 10], "label": "cat", "score": 0.9},
            {"box": [1, 1, 10, 10], "label": "cat", "score": 0.8},  # the same cat
            {"box": [1, 1, 10, 10], "label": "dog", "score": 0.7},  # another label
            {"box": [20, 20, 30, 30], "label": "cat", "score": 0.6}]  # another cat
    assert [o["score"] for o in nms(objs, 0.5)] == [0.9, 0.7, 0.6]


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
    with pytest.raises(WeightsFormatError, match="not a detector from words"):
        get_annotator("grounding", tiny_sources["depth"], offline=True)
    with pytest.raises(WeightsFormatError, match="not a single file"):
        get_annotator("grounding", tiny_sources["sam"], offline=True)
    with pytest.raises(MissingWeightsError, match="not available offline"):
        get_annotator("grounding", "IDEA-Research/no-such-detector",
                      cache_dir=tmp_path, offline=True)
    with pytest.raises(MissingWeightsError, match="is not a model folder"):
        get_annotator("grounding", tmp_path / "no-such-folder", offline=True)
