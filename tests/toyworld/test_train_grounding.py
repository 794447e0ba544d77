"""The toy detector's training script: its queries name each shape and near misses, its
dense targets mark exactly the named shapes' patches and boxes, a few steps lower the loss,
and the export loads through the studio's detector annotator."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from annotators import get_annotator
from toyworld import train_grounding
from toyworld.scenes import SIZE, Scene, Shape

SCENE = Scene([Shape("circle", "red", 16, 16, 20), Shape("square", "blue", 44, 44, 20)])


def test_queries_name_every_shape_and_some_near_misses():
    rng = random.Random(3)
    for _ in range(10):
        qs = train_grounding.queries(SCENE, rng)
        assert len(qs) == train_grounding.QUERIES
        named = {w for _, w in qs}
        assert {("red", "circle"), ("blue", "square")} <= named
        for text, (colour, kind) in qs:
            assert (colour or "") in text and (kind or "") in text
    misses = [w for _ in range(20) for _, w in train_grounding.queries(SCENE, rng)
              if not any(train_grounding.matches(s, w) for s in SCENE.shapes)]
    assert misses  # phrases that name nothing in the scene are asked too


def test_targets_mark_the_named_shapes_patches_and_boxes():
    what = [("red", "circle"), ("blue", "circle"), (None, "square"), ("blue", None)]
    labels, weight, boxes, cover = train_grounding.targets(SCENE, what)
    grid = SIZE // train_grounding.PATCH
    circle = SCENE.mask(0).reshape(grid, 4, grid, 4).mean(axis=(1, 3)).reshape(-1)
    square = SCENE.mask(1).reshape(grid, 4, grid, 4).mean(axis=(1, 3)).reshape(-1)
    assert set(np.nonzero(labels[:, 0] == 1)[0]) == set(np.nonzero(circle >= 0.5)[0])
    assert not (labels[:, 1] == 1).any()  # no blue circle here
    assert set(np.nonzero(labels[:, 2] == 1)[0]) == set(np.nonzero(square >= 0.5)[0])
    assert (labels[:, 3] == labels[:, 2]).all()  # "the blue shape" is the square
    border = (cover > 0) & (cover < 0.5)
    assert (labels[border] == -1).all() and (labels[cover == 0] == 0).all()
    inside = np.nonzero(square >= 0.5)[0]
    assert boxes[inside] == pytest.approx(np.array([[44 / SIZE, 44 / SIZE, 20 / SIZE,
                                                     20 / SIZE]] * len(inside)), abs=0.02)
    assert (weight[inside] == 1).all() and (weight[cover == 0] == 0).all()


def test_confusable_scenes_share_a_kind_or_a_colour_and_keep_their_places():
    rng = random.Random(0)
    for _ in range(20):
        scene = train_grounding.confusable(SCENE, rng)
        a, b = scene.shapes
        assert [(s.cx, s.cy, s.size) for s in scene.shapes] == [
            (s.cx, s.cy, s.size) for s in SCENE.shapes]
        assert (a.kind == b.kind) != (a.colour == b.colour)  # alike in one word only


def test_patches_at_the_last_row_and_column_never_fire():
    """OWL-ViT pins those patches' box centres to the image edge: they are taught to stay
    off, and the shape is still found by its inner patches."""
    scene = Scene([Shape("square", "red", 55, 55, 16)])  # reaches the right and bottom edges
    labels, weight, _, cover = train_grounding.targets(scene, [("red", "square")])
    grid = SIZE // train_grounding.PATCH
    edge = np.zeros((grid, grid), bool)
    edge[-1, :] = edge[:, -1] = True
    edge = edge.reshape(-1)
    assert (cover[edge] >= 0.5).any()  # the shape does cover edge patches
    assert (labels[edge] == 0).all() and (weight[edge] == 0).all()
    assert (labels[~edge, 0] == 1).sum() >= 4


@pytest.mark.slow
def test_training_lowers_the_loss_and_the_export_loads(tmp_path, caplog):
    caplog.set_level("INFO", logger="toyworld.train_grounding")
    model, processor = train_grounding.train(steps=30, batch=4)
    losses = [float(r.getMessage().split(" loss ")[1].split()[0]) for r in caplog.records
              if " loss " in r.getMessage()]
    assert losses[-1] < losses[0]
    dest = train_grounding.export(model, processor, tmp_path)
    detector = get_annotator("grounding", dest, offline=True)
    assert detector.model.config.model_type == "owlvit"
    with torch.no_grad():
        found = detector.detect(Scene([Shape("circle", "red", 30, 30, 20)]).render(),
                                "the red circle", threshold=0.0)
    assert found and all(0 <= v <= SIZE for o in found for v in o["box"])
