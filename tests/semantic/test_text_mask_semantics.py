"""Words that select, used by the other tools, in the toy world (trained detector and SAM):
a text mask drives "only masked" inpainting, and Layout's found boxes become the boxes that
"regenerate inside boxes" repaints."""

from __future__ import annotations

import numpy as np

from studio.backend.tasks.inpaint import binary_array
from studio.backend.tasks.text_mask import layout_boxes, text_mask
from toyworld.analyse import analyse, iou
from toyworld.scenes import SIZE, Scene, Shape

SCENE = Scene([Shape("circle", "red", 18, 20, 22), Shape("square", "blue", 44, 42, 22)])


def test_only_masked_inpainting_of_a_text_mask_repaints_just_that_shape(toy_studio):
    image = SCENE.render()
    mask, info = text_mask(toy_studio, image, "the blue square")
    inside = binary_array(mask)
    assert info["labels"] == ["the blue square"] and iou(inside, SCENE.mask(1)) >= 0.8
    out = np.asarray(toy_studio.inpaint({
        "image": image, "mask": mask, "prompt": "a green square", "seed": 3, "steps": 20,
        "only_masked": True, "padding": 8, "mask_blur": 1}).image.convert("RGB"))
    before = np.asarray(image)
    assert np.array_equal(out[~inside], before[~inside])  # only the square's pixels changed
    found = [f for f in analyse(out) if inside[int(f.centroid[1]), int(f.centroid[0])]]
    assert found and found[0].colour == "green"


def test_found_boxes_become_layout_boxes_to_regenerate_inside(toy_studio):
    image = SCENE.render()
    boxes = layout_boxes(toy_studio, image, "the red circle")
    assert [b["phrase"] for b in boxes] == ["the red circle"]
    x0, y0, x1, y1 = (round(v * SIZE) for v in boxes[0]["box"])
    found = np.zeros((SIZE, SIZE), bool)
    found[y0:y1, x0:x1] = True
    truth = np.zeros((SIZE, SIZE), bool)
    tx0, ty0, tx1, ty1 = SCENE.shapes[0].box
    truth[ty0:ty1, tx0:tx1] = True
    assert iou(found, truth) >= 0.7  # the circle's own box
    out = toy_studio.run("layout", {
        "prompt": "a yellow circle", "mode": "inside_boxes", "image": image, "seed": 5,
        "steps": 20, "boxes": [{"phrase": "a yellow circle", "box": boxes[0]["box"]}]}).image
    shapes = analyse(out.convert("RGB"))
    inside = [f for f in shapes if found[int(f.centroid[1]), int(f.centroid[0])]]
    assert inside and inside[0].colour == "yellow"  # regenerated in the found box
    assert any(f.colour == "blue" for f in shapes if not found[int(f.centroid[1]),
                                                              int(f.centroid[0])])
