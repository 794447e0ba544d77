"""GLIGEN box layouts on the tiny set: boxes steer the image, bad boxes get clear errors.

"Without boxes" is the same GLIGEN pipeline and seed with the grounding switched off
(`gligen_fraction` 0: scheduled sampling skips the gated layers on every step). The pipeline
cannot run with an empty box list, so zero boxes is a RequestError, not a baseline; and
txt2img uses a different (base) UNet, so it is no baseline either.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.backend.common import Cancelled
from studio.backend.requests import RequestError
from studio.backend.tasks.layout import (
    LayoutRequest,
    box_mask,
    boxes_from_pixels,
    boxes_to_pixels,
    layout_pipeline,
    parse_boxes,
    prompt_with_phrases,
)

BIRD = {"phrase": "a red bird", "box": [0.1, 0.1, 0.45, 0.5]}
BENCH = {"phrase": "a wooden bench", "box": [0.5, 0.55, 0.95, 0.9]}
BENCH_MOVED = {"phrase": "a wooden bench", "box": [0.05, 0.55, 0.5, 0.9]}
BASE = {"prompt": "a park", "seed": 5, "steps": 4, "width": 64, "height": 96,
        "gligen_fraction": 0.5}


def pixels(result) -> np.ndarray:
    return np.asarray(result.image.convert("RGB")).astype(np.int16)


# ------------------------------------------------------------------------- pure helpers
def test_pixel_boxes_on_non_square_canvas_map_to_normalised_boxes():
    drawn = [
        {"xmin": 50, "ymin": 25, "xmax": 150, "ymax": 75, "label": "a red bird"},
        {"xmin": 0, "ymin": 0, "xmax": 200, "ymax": 100, "label": " a bench "},
        {"xmin": 20, "ymin": 10, "xmax": 60, "ymax": 90, "label": "a cat"},
        {"xmin": -4, "ymin": 90, "xmax": 230, "ymax": 104, "label": "sea"},  # clipped
    ]
    boxes = boxes_from_pixels(drawn, 200, 100)
    assert [b["phrase"] for b in boxes] == ["a red bird", "a bench", "a cat", "sea"]
    expected = [[0.25, 0.25, 0.75, 0.75], [0, 0, 1, 1], [0.1, 0.1, 0.3, 0.9], [0, 0.9, 1, 1]]
    for b, e in zip(boxes, expected, strict=True):
        assert b["box"] == pytest.approx(e, abs=1e-4)
    assert parse_boxes(json.dumps(boxes)) == boxes  # the API accepts what the canvas gives
    # and back onto a canvas of another size (the UI's "blank canvas of the output size")
    back = boxes_to_pixels(boxes[:1], 64, 96)
    assert (back[0]["xmin"], back[0]["ymin"], back[0]["xmax"], back[0]["ymax"]) == (16, 24, 48, 72)


def test_box_mask_and_prompt_with_phrases():
    mask = np.asarray(box_mask([BIRD], (40, 20))) > 0
    assert mask.shape == (20, 40)
    assert mask[2:10, 4:18].all() and mask.sum() == 8 * 14
    assert prompt_with_phrases("a park with a red bird", ["a red bird", "a bench"]) == (
        "a park with a red bird, a bench")


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ('[{"phrase": "a bird", "box": [0.5, 0.1, 0.4, 0.3]}]', r"box 1 has x1 <= x0"),
        ('[{"phrase": "a bird", "box": [0.5, 0.1, 0.5, 0.3]}]', r"box 1 has x1 <= x0"),
        ([BIRD, {"phrase": "a bird", "box": [0.1, 0.6, 0.4, 0.3]}], r"box 2 has y1 <= y0"),
        ([{"phrase": "a bird", "box": [-0.1, 0.1, 0.4, 0.3]}], r"outside \[0, 1\]"),
        ([{"phrase": "a bird", "box": [0.1, 0.1, 1.5, 0.3]}], r"outside \[0, 1\]"),
        ([{"phrase": "a bird", "box": [10, 20, 300, 200]}], r"normalised"),
        ([BIRD] * 31, r"31 boxes given; GLIGEN grounds at most 30"),
        ([{"phrase": "  ", "box": [0.1, 0.1, 0.4, 0.3]}], r"box 1 has an empty phrase"),
        ([{"box": [0.1, 0.1, 0.4, 0.3]}], r"box 1 has an empty phrase"),
        ('[{"phrase": "a bird", "box": [0.1, 0.1, 0.4, 0.3]', r"boxes is not valid JSON"),
        ("{'phrase': 'a bird'}", r"boxes is not valid JSON"),
        ('{"phrase": "a bird", "box": [0.1, 0.1, 0.4, 0.3]}', r"wrap it in \[ \]"),
        ([{"phrase": "a bird", "box": [0.1, 0.1, 0.4]}], r"box 1 must be 4 numbers"),
        ([{"phrase": "a bird", "box": [0.1, "x", 0.4, 0.5]}], r"box 1: y0 must be a finite"),
        ([{"phrase": "a bird", "box": [0.1, float("nan"), 0.4, 0.5]}], r"y0 must be a finite"),
        ([{"phrase": "a bird", "bbox": [0.1, 0.1, 0.4, 0.3]}], r"unknown keys 'bbox'"),
        (["a bird"], r"box 1 must be an object"),
        ("[]", r"no boxes: draw at least one box"),
        ("", r"no boxes"),
    ],
)
def test_bad_boxes_get_clear_errors(boxes, message):
    with pytest.raises(RequestError, match=message):
        LayoutRequest(**{**BASE, "boxes": boxes}).validate()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gligen_fraction": 1.5}, r"gligen_fraction must be between 0 and 1"),
        ({"mode": "paint"}, r"unknown layout mode 'paint'"),
        ({"mode": "inside_boxes"}, r"needs the image to regenerate inside"),
        ({"image": Image.new("RGB", (64, 64))}, r"mode is \"generate\", which ignores it"),
        ({"mode": "inside_boxes", "image": b"not an image"}, r"image could not be read"),
        ({"append_phrases": "yes"}, r"append_phrases must be true or false"),
        ({"width": 100}, r"width must be a multiple of 8"),
    ],
)
def test_bad_layout_requests_get_clear_errors(change, message):
    with pytest.raises(RequestError, match=message):
        LayoutRequest(**{**BASE, "boxes": [BIRD], **change}).validate()


def test_valid_request_normalises_boxes_and_is_json_able():
    req = LayoutRequest(**{**BASE, "boxes": json.dumps([{**BIRD, "phrase": " a red bird "}])})
    req.validate()
    assert req.boxes == [{"phrase": "a red bird", "box": [0.1, 0.1, 0.45, 0.5]}]
    d = json.loads(json.dumps(req.to_dict()))
    assert d["task"] == "layout" and d["boxes"] == req.boxes and d["image"] is None


# ------------------------------------------------------------------------- with the models
def test_gligen_shares_text_encoder_and_vae_and_keeps_quiet(fresh_studio):
    from studio.backend.common import base_pipeline

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    watched = logging.getLogger("diffusers.pipelines.pipeline_utils")
    watched.addHandler(handler)
    try:
        reg = fresh_studio.registry
        gen, inside = layout_pipeline(reg, "generate"), layout_pipeline(reg, "inside_boxes")
    finally:
        watched.removeHandler(handler)
    assert not [r for r in records if "deprecated" in r.getMessage()]
    base = base_pipeline(reg)
    for name in ("text_encoder", "vae", "tokenizer"):
        assert getattr(gen, name) is getattr(base, name) is getattr(inside, name)
    assert gen.unet is not base.unet and inside.unet is not gen.unet
    assert gen.unet.position_net is not None and inside.unet.config.in_channels == 9
    assert layout_pipeline(reg, "generate") is gen  # cached: no second build


def test_boxes_steer_the_image(studio):
    two = studio.layout({**BASE, "boxes": [BIRD, BENCH]})
    assert two.image.size == (64, 96) and two.info["grounded_steps"] == 2
    moved = studio.layout({**BASE, "boxes": [BIRD, BENCH_MOVED]})
    # same seed, one box moved: the image changes, broadly
    diff = np.abs(pixels(two) - pixels(moved))
    assert diff.max() > 4 and (diff > 0).mean() > 0.1
    # grounding off (fraction 0) = the same pipeline and seed "without boxes": now the boxes
    # do not matter, and the grounded images differ from it
    off = studio.layout({**BASE, "boxes": [BIRD, BENCH], "gligen_fraction": 0})
    off_moved = studio.layout({**BASE, "boxes": [BIRD, BENCH_MOVED], "gligen_fraction": 0})
    assert off.info["grounded_steps"] == 0
    assert np.array_equal(pixels(off), pixels(off_moved))
    assert np.abs(pixels(two) - pixels(off)).max() > 4
    # the saved request regenerates the same pixels
    again = studio.regenerate(two.path)
    assert np.array_equal(pixels(again), pixels(two))


def test_fraction_that_grounds_no_step_is_refused(studio):
    with pytest.raises(RequestError, match=r"grounds no step.*at least 0\.34"):
        studio.layout({**BASE, "boxes": [BIRD], "steps": 3, "gligen_fraction": 0.3})


def test_too_long_phrase_is_refused(studio):
    phrase = ", ".join(["a"] * 90)  # under the character limit, far over 77 tokens
    with pytest.raises(RequestError, match=r"phrase of box 1 is \d+ tokens long"):
        studio.layout({**BASE, "boxes": [{"phrase": phrase, "box": [0.1, 0.1, 0.5, 0.5]}]})


def test_inside_boxes_keeps_every_pixel_outside_the_boxes(studio):
    rng = np.random.default_rng(0)
    reference = Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))  # 96x64
    boxes = [BIRD, BENCH]
    result = studio.layout({**BASE, "boxes": boxes, "mode": "inside_boxes", "image": reference,
                            "append_phrases": True})
    assert result.image.size == reference.size and result.info["grounded_steps"] == 2
    assert result.info["prompt_used"] == "a park, a red bird, a wooden bench"
    out, ref = pixels(result), np.asarray(reference).astype(np.int16)
    inside = np.zeros((64, 96), bool)
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        inside[math.floor(y0 * 64):math.ceil(y1 * 64), math.floor(x0 * 96):math.ceil(x1 * 96)] = 1
    assert np.array_equal(out[~inside], ref[~inside])  # bit-exact outside every box
    assert (out[inside] != ref[inside]).any(-1).mean() > 0.9  # regenerated inside
    # the request stores a copy of the reference, so the image can be regenerated
    saved = result.info["request"]["image"]
    assert isinstance(saved, str) and not Path(saved).is_absolute()  # no server paths
    assert np.array_equal(np.asarray(Image.open(studio.outputs.folder / saved)), ref)
    again = studio.regenerate(result.path)
    assert np.array_equal(pixels(again), out)


def test_fast_mode_loads_lcm_lora_into_the_gligen_unet(studio):
    result = studio.layout({**BASE, "boxes": [BIRD], "fast": True, "steps": 8})
    assert result.info["steps_run"] == 4 and result.info["guidance_run"] == 1.0
    assert "lcm" in studio.registry.loras("unet_gligen")


def test_cancel_stops_the_run(studio):
    token = studio.job_token("layout-test")
    token.cancel()
    with pytest.raises(Cancelled):
        studio.layout({**BASE, "boxes": [BIRD]}, cancel=token)
