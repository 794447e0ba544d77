"""Inpainting on the tiny set: exact outside pixels, only-masked crops, mask tools, errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.backend.requests import RequestError
from studio.backend.tasks.inpaint import (
    InpaintRequest,
    binary_array,
    draw_prompts,
    feather_alpha,
    from_binary,
    full_work_size,
    grow_mask,
    invert_mask,
    load_mask,
    mask_from_editor,
    parse_box,
    parse_points,
    segment,
    shrink_mask,
)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8))


def _mask(w: int, h: int, box: tuple[int, int, int, int]) -> Image.Image:
    arr = np.zeros((h, w), dtype=bool)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = True
    return from_binary(arr)


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _changed(a: Image.Image, b: Image.Image) -> np.ndarray:
    return (_px(a) != _px(b)).any(-1)


SMALL = (96, 64)
SMALL_BOX = (20, 10, 60, 40)


# ---------------------------------------------------------------------------- full image
@pytest.mark.parametrize(("mode", "unet_role"), [("inpaint", "unet_inpaint"), ("blend", "unet")])
def test_outside_mask_is_bit_exact(studio, mode, unet_role) -> None:
    image, mask = _image(*SMALL), _mask(*SMALL, SMALL_BOX)
    res = studio.inpaint({"image": image, "mask": mask, "prompt": "a red ball", "seed": 1,
                          "steps": 2, "mode": mode, "mask_blur": 0})
    assert res.image.size == image.size
    changed = _changed(res.image, image)
    inside = binary_array(mask)
    assert not changed[~inside].any(), "pixels outside the mask changed"
    assert changed[inside].mean() > 0.9, "the masked area was not repainted"
    assert res.info["mode_run"] == mode and res.info["work_size"] == [96, 64]
    # the right UNet ran: the pipeline is built on the role's shared UNet
    from studio.backend.tasks.inpaint import inpaint_pipeline

    pipe = inpaint_pipeline(studio.registry, mode)
    assert pipe.unet is studio.registry.component(unet_role)
    assert pipe.unet.config.in_channels == (9 if mode == "inpaint" else 4)
    assert pipe.vae is studio.registry.component("vae")
    assert pipe.text_encoder is studio.registry.component("text_encoder")


def test_feather_strength_and_odd_size_keep_outside_exact(studio) -> None:
    # 100x70 is not a multiple of 8: works at 104x72, output stays 100x70
    image, mask = _image(100, 70, seed=2), _mask(100, 70, (30, 20, 80, 60))
    res = studio.inpaint({"image": image, "mask": mask, "prompt": "", "seed": 4, "steps": 3,
                          "mode": "blend", "mask_blur": 6, "strength": 0.7})
    assert res.image.size == (100, 70)
    assert res.info["work_size"] == [104, 72] and res.info["steps_run"] == 2
    changed = _changed(res.image, image)
    assert not changed[~binary_array(mask)].any()
    # feathered: the edge moves less than the centre
    diff = np.abs(_px(res.image).astype(int) - _px(image).astype(int)).sum(-1)
    assert diff[21:59, 31:79].mean() > diff[20, 30:80].mean()


def test_saved_request_regenerates_the_same_image(studio) -> None:
    image, mask = _image(*SMALL, seed=5), _mask(*SMALL, (50, 20, 90, 60))
    res = studio.inpaint({"image": image, "mask": mask, "prompt": "a cat", "seed": 9,
                          "steps": 2, "mode": "blend", "mask_blur": 2})
    request = res.info["request"]
    assert isinstance(request["image"], str) and isinstance(request["mask"], str)
    again = studio.regenerate(res.path)
    assert np.array_equal(_px(again.image), _px(res.image))


# ---------------------------------------------------------------------------- only masked
def test_only_masked_crops_off_centre_and_pastes_back(studio) -> None:
    w, h = 640, 360
    box = (500, 40, 540, 80)  # top right, off centre
    image, mask = _image(w, h, seed=3), _mask(w, h, box)
    res = studio.inpaint({"image": image, "mask": mask, "prompt": "a bird", "seed": 2,
                          "steps": 2, "mode": "inpaint", "only_masked": True, "padding": 16,
                          "width": 64, "height": 64, "mask_blur": 0})
    assert res.image.size == (w, h)
    assert res.info["work_size"] == [64, 64]
    x0, y0, x1, y1 = res.info["crop"]
    # the crop holds the mask (+ padding), lies in the image and is where the mask is
    assert 0 <= x0 <= box[0] - 16 and 0 <= y0 <= box[1] - 16
    assert box[2] + 16 <= x1 <= w and box[3] + 16 <= y1 <= h
    assert (x1 - x0) * (y1 - y0) < 0.1 * w * h
    assert abs((x1 - x0) - (y1 - y0)) <= 1  # widened to the 64x64 working aspect
    changed = _changed(res.image, image)
    inside = binary_array(mask)
    assert not changed[~inside].any()
    assert changed[inside].mean() > 0.9


def test_only_masked_blend_at_the_image_edge(studio) -> None:
    w, h = 640, 360
    box = (0, 300, 60, 360)  # touches the bottom-left corner
    image, mask = _image(w, h, seed=4), _mask(w, h, box)
    res = studio.inpaint({"image": image, "mask": mask, "prompt": "grass", "seed": 3,
                          "steps": 2, "mode": "blend", "only_masked": True, "padding": 8,
                          "width": 96, "height": 64})
    assert res.image.size == (w, h)
    x0, y0, x1, y1 = res.info["crop"]
    assert x0 == 0 and y1 == h and x1 < w / 2 and y0 > h / 3
    assert not _changed(res.image, image)[~binary_array(mask)].any()


def test_blend_fallback_without_inpainting_model(studio, tiny_settings) -> None:
    from studio.backend.service import Studio

    no_inpaint = Studio(tiny_settings, model_set=studio.model_set.with_repos(inpaint=""),
                        registry=None)
    image, mask = _image(*SMALL), _mask(*SMALL, SMALL_BOX)
    res = no_inpaint.inpaint({"image": image, "mask": mask, "prompt": "x", "seed": 1,
                              "steps": 1, "mode": "inpaint"})
    assert res.info["mode_run"] == "blend"
    assert any("no inpainting model" in w for w in res.info["warnings"])
    assert not _changed(res.image, image)[~binary_array(mask)].any()


# ---------------------------------------------------------------------------- validation
def _validate(**kw) -> InpaintRequest:
    base = {"image": _image(*SMALL), "mask": _mask(*SMALL, SMALL_BOX), "prompt": "x",
            "steps": 2}
    base.update(kw)
    req = InpaintRequest.from_dict(base)
    req.validate()
    return req


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"mask": _mask(*SMALL, (0, 0, 0, 0))}, "mask is empty"),
        ({"mask": None}, "mask is missing"),
        ({"mask": _mask(64, 64, (0, 0, 10, 10))}, "mask is 64x64 but image is 96x64"),
        ({"image": b"not an image"}, "image could not be read as an image"),
        ({"mask": "/nonexistent/mask.png"}, "mask: the server opens only files uploaded"),
        ({"image": None}, "image is missing"),
        ({"strength": 0}, "strength must be more than 0 and at most 1, got 0"),
        ({"strength": 1.5}, "strength must be more than 0 and at most 1, got 1.5"),
        ({"strength": float("nan")}, "strength must be more than 0"),
        ({"strength": "high"}, "strength must be more than 0"),
        ({"strength": 0.2, "steps": 3}, "runs no denoising step; use at least 5 steps"),
        ({"mode": "paint"}, "unknown mode 'paint'"),
        ({"padding": -1}, "padding must be between 0 and 1024"),
        ({"mask_blur": 1000}, "mask blur must be between 0 and 256"),
        ({"only_masked": "yes"}, "only_masked must be true or false"),
        ({"only_masked": True, "width": 100}, "width must be a multiple of 8"),
        ({"colour": 1}, "unknown inpaint parameters: colour"),
    ],
)
def test_bad_requests_say_what_is_wrong(kw, message) -> None:
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _validate(**kw)


def test_mask_of_same_shape_is_resized_with_warning() -> None:
    req = _validate(mask=_mask(48, 32, (10, 5, 30, 20)))  # half size, same 3:2 shape
    assert req.mask.size == SMALL
    assert req.mask_warnings == ["mask was 48x32; resized to the image size 96x64"]
    assert binary_array(req.mask)[10:40, 20:60].all()


def test_full_image_working_size_is_set_and_prompt_may_be_empty() -> None:
    req = _validate(prompt="", width=512, height=512)
    assert (req.width, req.height) == SMALL
    assert full_work_size((100, 70)) == (104, 72)
    assert full_work_size((4000, 3000)) == (2048, 1536)
    assert full_work_size((40, 30)) == (88, 64)
    with pytest.raises(RequestError, match="too long and thin"):
        full_work_size((8000, 100))


# ---------------------------------------------------------------------------- mask tools
def test_mask_inputs_white_transparent_and_editor_layers() -> None:
    rgba = np.zeros((64, 96, 4), dtype=np.uint8)
    rgba[10:20, 10:20] = [255, 255, 255, 255]  # painted white
    rgba[30:40, 30:40] = [255, 255, 255, 0]  # white but transparent: keep
    mask, warnings = load_mask(Image.fromarray(rgba), SMALL)
    arr = binary_array(mask)
    assert arr[10:20, 10:20].all() and arr.sum() == 100 and warnings == []
    # an editor value: any painted layer pixel, whatever its colour
    layer = np.zeros((64, 96, 4), dtype=np.uint8)
    layer[5:15, 50:70] = [255, 48, 48, 153]
    value = {"background": _image(*SMALL), "layers": [Image.fromarray(layer)], "composite": None}
    assert binary_array(mask_from_editor(value)).sum() == 200
    assert binary_array(load_mask(value, SMALL)[0]).sum() == 200
    empty = {"background": _image(*SMALL), "layers": [], "composite": None}
    assert not binary_array(mask_from_editor(empty)).any()


def test_grow_shrink_invert_feather() -> None:
    mask = _mask(64, 64, (20, 20, 40, 40))
    grown, shrunk = binary_array(grow_mask(mask, 4)), binary_array(shrink_mask(mask, 4))
    assert grown[16:44, 20:40].all() and not grown[14, 30] and not grown[16, 16]  # round
    assert shrunk.sum() == 12 * 12 and shrunk[24:36, 24:36].all()
    assert not binary_array(shrink_mask(mask, 10)).any()
    assert binary_array(invert_mask(mask)).sum() == 64 * 64 - 400
    alpha = feather_alpha(mask, 6)
    assert alpha[~binary_array(mask)].max() == 0.0  # nothing outside
    assert alpha[30, 30] == 1.0 and 0 < alpha[20, 30] < 0.2 < alpha[23, 30] < 1.0
    assert np.array_equal(feather_alpha(mask, 0), binary_array(mask).astype(np.float32))
    with pytest.raises(RequestError, match="grow must be a whole number"):
        grow_mask(mask, 2.5)


def test_sam_prompts_parse_and_draw() -> None:
    assert parse_points("[[10, 20, 1], [30, 5, 0]]", (64, 64)) == [[10, 20, 1], [30, 5, 0]]
    assert parse_points("", None) == [] and parse_box("") is None and parse_box("[]") is None
    assert parse_box([1, 2, 30, 40], (64, 64)) == [1, 2, 30, 40]
    for bad, msg in [("[[1, 2]]", "point 1 must be"), ("[[1, 2, 5]]", "label must be 1"),
                     ("[[100, 2, 1]]", "outside the 64x64 image"), ("{", "not valid JSON")]:
        with pytest.raises(RequestError, match=msg):
            parse_points(bad, (64, 64))
    with pytest.raises(RequestError, match="x1 > x0"):
        parse_box("[10, 10, 5, 20]")
    view = draw_prompts(_image(64, 64), [[10, 10, 1]], [5, 5, 30, 30], _mask(64, 64, SMALL_BOX))
    assert view.size == (64, 64)


class _FakeSam:
    """Stands in for studio.annotators: a box-shaped mask around the first click."""

    def __init__(self) -> None:
        self.calls: list = []

    def sam_mask(self, image, points, box):
        self.calls.append((image.size, points, box))
        x, y, _ = points[0]
        m = _mask(*image.size, (int(x) - 5, int(y) - 5, int(x) + 5, int(y) + 5))
        return m, {"score": 0.9, "candidates": [0.9, 0.5], "masks": [m, invert_mask(m)]}


def test_segment_passes_pixels_and_collects_candidates() -> None:
    class S:
        annotators = _FakeSam()

    mask, info, cands = segment(S, _image(*SMALL), "[[30, 20, 1]]", "")
    assert S.annotators.calls == [(SMALL, [[30, 20, 1]], None)]
    assert binary_array(mask).sum() == 100 and binary_array(mask)[20, 30]
    assert info["points"] == [[30, 20, 1]] and info["score"] == 0.9 and "masks" not in info
    assert len(cands) == 2
    with pytest.raises(RequestError, match="no clicks and no box"):
        segment(S, _image(*SMALL), "[]", "")
