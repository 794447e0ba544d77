"""The toy detector's training script (work in progress: not shipped until it meets its
bar): its examples name the right boxes, a few steps lower the loss, the export loads
through the studio's Grounding DINO annotator."""

from __future__ import annotations

import random

import pytest
import torch

from annotators import get_annotator
from toyworld import train_grounding
from toyworld.scenes import SIZE, Scene, Shape


def test_examples_name_the_shapes_boxes():
    scene = Scene([Shape("circle", "red", 16, 16, 20), Shape("square", "blue", 44, 44, 20)])
    rng = random.Random(3)
    for _ in range(20):
        text, boxes, labels = train_grounding.example(scene, rng)
        phrases = text.split(". ")
        assert len(boxes) == len(labels) and all(0 <= c < len(phrases) for c in labels)
        for (cx, cy, w, _h), c in zip(boxes, labels, strict=True):
            shape = next(s for s in scene.shapes
                         if s.kind in phrases[c] and (s.colour in phrases[c]
                                                      or phrases[c] == f"the {s.kind}"))
            assert (cx, cy) == pytest.approx((shape.cx / SIZE, shape.cy / SIZE), abs=0.02)
            assert w == pytest.approx(shape.size / SIZE, abs=0.02)


def test_training_runs_and_the_export_loads(tmp_path):
    model, processor = train_grounding.train(steps=3, batch=2)
    dest = train_grounding.export(model, processor, tmp_path)
    detector = get_annotator("grounding", dest, offline=True)
    assert processor.tokenizer.convert_tokens_to_ids(".") == 1012  # BERT's phrase separator
    with torch.no_grad():
        found = detector.detect(Scene([Shape("circle", "red", 30, 30, 20)]).render(),
                                "the red circle", threshold=0.0)
    assert found and all(0 <= v <= SIZE for o in found for v in o["box"])
