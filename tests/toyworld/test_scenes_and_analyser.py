"""The toy world's data generator and the analyser the semantic tests will rely on."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from toyworld.analyse import analyse, foreground, iou
from toyworld.scenes import (
    COMMON_COLOURS,
    HELD_OUT_SHAPE,
    RARE_COLOUR,
    SHAPES,
    Scene,
    Shape,
    random_scene,
)

SEEDS = range(300)


def test_same_seed_same_scene_and_pixels():
    a, b = random_scene(7), random_scene(7)
    assert a.shapes == b.shapes
    assert np.array_equal(np.asarray(a.render()), np.asarray(b.render()))
    assert random_scene(8).shapes != a.shapes


def test_scenes_have_one_to_three_non_overlapping_shapes_and_captions():
    counts = Counter()
    for seed in SEEDS:
        scene = random_scene(seed)
        counts[len(scene.shapes)] += 1
        masks = [scene.mask(i) for i in range(len(scene.shapes))]
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                assert not np.logical_and(masks[i], masks[j]).any()
        assert scene.caption == " and ".join(f"a {s.colour} {s.kind}" for s in scene.shapes)
    assert set(counts) == {1, 2, 3}


def test_rare_colour_is_rare_but_present():
    shapes = [s for seed in range(3000) for s in random_scene(seed).shapes]
    rate = sum(s.colour == RARE_COLOUR for s in shapes) / len(shapes)
    assert 0.003 < rate < 0.02
    assert all(s.kind != HELD_OUT_SHAPE for s in shapes)


def test_analyser_recovers_every_generated_shape():
    right = total = 0
    for seed in SEEDS:
        scene = random_scene(seed)
        found = analyse(scene.render())
        assert len(found) == len(scene.shapes), (seed, scene.caption)
        for i, shape in enumerate(scene.shapes):
            best = max(found, key=lambda f: iou(f.mask, scene.mask(i)))
            assert iou(best.mask, scene.mask(i)) > 0.9
            total += 1
            right += best.colour == shape.colour and best.shape == shape.kind
    assert right / total >= 0.98, f"{right}/{total}"


@pytest.mark.parametrize("kind", [*SHAPES, HELD_OUT_SHAPE])
@pytest.mark.parametrize("size", [14, 26])
def test_each_shape_is_recognised(kind, size):
    scene = Scene([Shape(kind, COMMON_COLOURS[0], 32, 32, size)])
    (found,) = analyse(scene.render())
    assert found.shape == kind and found.colour == COMMON_COLOURS[0]
    # a triangle's centroid sits a sixth of its height below the box centre
    assert found.centroid == pytest.approx((32, 32), abs=size / 5)


def test_derived_maps_boxes_and_instruction_pairs_match_the_scene():
    scene = random_scene(3, max_shapes=3)
    fg = foreground(scene.render())
    scribble = np.asarray(scene.scribble().convert("L")) > 127
    edges = np.asarray(scene.edges().convert("L")) > 127
    for i, shape in enumerate(scene.shapes):
        m = scene.mask(i)
        x0, y0, x1, y1 = shape.box
        assert m[y0:y1, x0:x1].sum() == m.sum()  # the box holds the whole shape
        ring = np.zeros_like(m)
        ring[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = True
        assert scribble[ring].any() and edges[ring].any()
    assert not edges[~np.pad(fg, 0)].all()  # not everything is an edge
    for b, s in zip(scene.boxes(), scene.shapes, strict=True):
        assert b["phrase"] == s.phrase and all(0 <= v <= 1 for v in b["box"])
    after, instruction = scene.recoloured(0, "blue" if scene.shapes[0].colour != "blue"
                                          else "red")
    assert instruction.startswith(f"make the {scene.shapes[0].kind} ")
    before_px, after_px = np.asarray(scene.render()), np.asarray(after.render())
    changed = np.any(before_px != after_px, axis=-1)
    assert changed.any() and not changed[~scene.mask(0)].any()  # only that shape changed


def test_crosses_are_recognised_and_concave_blobs_are_not_crosses():
    for size in range(16, 29, 2):
        scene = Scene([Shape(HELD_OUT_SHAPE, "red", 32, 32, size)])
        (found,) = analyse(scene.render())
        assert found.shape == HELD_OUT_SHAPE, size
    # an L-shaped blob is concave like a cross, but it is not one
    blob = np.full((64, 64, 3), 245, np.uint8)
    blob[10:40, 10:20] = (220, 40, 40)
    blob[30:40, 10:45] = (220, 40, 40)
    (found,) = analyse(blob)
    assert found.shape == "blob"
