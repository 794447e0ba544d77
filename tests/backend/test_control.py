"""ControlNet task on the tiny model set: control changes the image, weight 0 does not,
stacking, img2img, resize modes, validation, and an honest saved request."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from studio.backend.requests import RequestError
from studio.backend.tasks.control import (
    ControlRequest,
    annotate_image,
    edit_pose,
    fit_to_size,
    render_pose,
    units_from_api,
)

BASE = dict(prompt="a cat on a mat", seed=1234, steps=2, guidance_scale=5.0, width=128,
            height=64, scheduler="Euler a")


def _map(size: tuple[int, int] = (640, 360)) -> Image.Image:
    """A white-on-black line drawing (what ControlNet scribble/canny maps look like)."""
    img = Image.new("RGB", size, "black")
    d = ImageDraw.Draw(img)
    w, h = size
    d.line((0, 0, w, h), fill="white", width=max(2, w // 60))
    d.ellipse((w // 4, h // 4, w * 3 // 4, h * 3 // 4), outline="white", width=max(2, w // 80))
    return img


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32)


@pytest.fixture(scope="module")
def reference(studio) -> np.ndarray:
    """txt2img with the same seed and parameters (the no-control output)."""
    return _arr(studio.txt2img(dict(BASE)).image)


@pytest.fixture(scope="module")
def canny_only(studio) -> np.ndarray:
    return _arr(studio.control({**BASE, "units": [{"type": "canny", "image": _map()}]}).image)


def test_control_image_changes_output(canny_only, reference) -> None:
    assert canny_only.shape == reference.shape == (64, 128, 3)
    assert np.abs(canny_only - reference).mean() > 2.0


def test_control_map_content_matters(studio, canny_only) -> None:
    inverted = ImageOps.invert(_map())
    other = _arr(studio.control({**BASE, "units": [{"type": "canny", "image": inverted}]}).image)
    assert np.abs(other - canny_only).mean() > 1.0


def test_weight_zero_matches_txt2img(studio, reference) -> None:
    # diffusers multiplies every ControlNet residual by the conditioning scale, so 0 adds zeros.
    out = studio.control({**BASE, "units": [{"type": "canny", "image": _map(), "weight": 0}]})
    assert np.abs(_arr(out.image) - reference).max() <= 2.0


def test_stacked_units_differ_from_each_alone(studio, canny_only) -> None:
    depth = {"type": "depth", "image": _map().transpose(Image.Transpose.FLIP_LEFT_RIGHT)}
    depth_only = _arr(studio.control({**BASE, "units": [depth]}).image)
    both = studio.control({**BASE, "units": [{"type": "canny", "image": _map()}, depth]})
    assert type(studio.registry._pipelines[_pipe_key(studio, "control", ("canny", "depth"))]
                .controlnet).__name__ == "MultiControlNetModel"
    stacked = _arr(both.image)
    assert np.abs(stacked - canny_only).mean() > 1.0
    assert np.abs(stacked - depth_only).mean() > 1.0
    assert len(both.info["control_maps"]) == 2
    assert len(both.extra_images) == 2


def _pipe_key(studio, name: str, types: tuple[str, ...]) -> str:
    reg = studio.registry
    roles = ["vae", "text_encoder", "tokenizer", "unet", *(f"controlnet:{t}" for t in types)]
    return name + "|" + "|".join(reg.key(r) for r in roles)


def test_pipeline_shares_registry_components(studio, canny_only) -> None:
    reg = studio.registry
    pipe = reg._pipelines[_pipe_key(studio, "control", ("canny",))]
    assert pipe.unet is reg.component("unet")
    assert pipe.vae is reg.component("vae")
    assert pipe.text_encoder is reg.component("text_encoder")
    assert pipe.controlnet is reg.component("controlnet:canny")


@pytest.fixture(scope="module")
def late_strong(studio):
    """Canny active only in the second half of the steps, at weight 1.5."""
    return studio.control({**BASE, "units": [{"type": "canny", "image": _map(), "weight": 1.5,
                                              "start": 0.5}]})


def test_start_end_window_matters(late_strong, canny_only) -> None:
    assert np.abs(_arr(late_strong.image) - canny_only).mean() > 1.0


def test_each_resize_mode_gives_exact_output_size(studio) -> None:
    # Three stacked units, one per resize mode, each from a 640x360 map, for a 128x64 output.
    modes = ["crop", "fit", "stretch"]
    out = studio.control({**BASE, "units": [
        {"type": t, "image": _map(), "resize_mode": m, "weight": 0.5}
        for t, m in zip(("scribble", "depth", "canny"), modes, strict=True)
    ]})
    assert out.image.size == (128, 64)
    assert [m.size for m in out.extra_images] == [(128, 64)] * 3
    prepared = [u["prepared_from"]["resize_mode"] for u in out.info["request"]["units"]]
    assert prepared == modes
    maps = [np.asarray(m) for m in out.extra_images]
    assert maps[1][:, 0].max() == 0  # "fit" pads with black bars at the sides
    assert not np.array_equal(maps[0], maps[2])


def test_fit_to_size_geometry() -> None:
    white = Image.new("RGB", (640, 360), "white")
    fit = np.asarray(fit_to_size(white, 128, 64, "fit"))
    assert fit.shape == (64, 128, 3)
    assert fit[:, 0].max() == 0 and fit[:, -1].max() == 0  # black bars left and right
    assert fit[:, 64].min() == 255
    crop = np.asarray(fit_to_size(white, 128, 64, "crop"))
    assert crop.min() == 255  # cover: no padding
    half = Image.new("RGB", (640, 360), "black")
    ImageDraw.Draw(half).rectangle((0, 0, 639, 3), fill="white")  # a thin band at the top
    assert np.asarray(fit_to_size(half, 128, 64, "crop"))[:2].max() < 128  # cropped away
    assert np.asarray(fit_to_size(half, 128, 64, "stretch"))[0].min() > 128  # kept
    assert fit_to_size(Image.new("RGB", (100, 300)), 64, 128, "stretch").size == (64, 128)


def test_img2img_with_control(studio, canny_only) -> None:
    init = Image.new("RGB", (256, 128), (200, 40, 40))
    out = studio.control({**BASE, "steps": 3, "units": [{"type": "canny", "image": _map()}],
                          "init_image": init, "strength": 0.7})
    assert out.image.size == (128, 64)
    assert out.info["steps_run"] == 2
    assert np.abs(_arr(out.image) - canny_only).mean() > 1.0
    assert out.info["request"]["init_image"].endswith(".png")


def test_saved_request_regenerates_same_image(studio, late_strong) -> None:
    unit = late_strong.info["request"]["units"][0]
    assert unit["preprocess"] is False and unit["image"].endswith(".png")
    assert unit["weight"] == 1.5 and unit["start"] == 0.5
    again = studio.regenerate(late_strong.path)
    assert np.array_equal(_arr(again.image), _arr(late_strong.image))


def test_units_from_api_joins_images(tmp_path) -> None:
    p = tmp_path / "m.png"
    _map().save(p)
    units = units_from_api([str(p)], '[{"type": "canny", "weight": 0.5, "start": 0, '
                                     '"end": 1, "preprocess": false}]')
    assert units == [{"type": "canny", "weight": 0.5, "start": 0, "end": 1,
                      "preprocess": False, "image": str(p)}]


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        ({"type": "canny", "start": -0.1}, "unit 1 start must be between 0 and 1"),
        ({"type": "canny", "end": 1.5}, "unit 1 end must be between 0 and 1"),
        ({"type": "canny", "start": 0.6, "end": 0.6}, "start (0.6) must be smaller than end"),
        ({"type": "canny", "start": 0.8, "end": 0.2}, "must be smaller than end"),
        ({"type": "segmentation"}, "unknown control type 'segmentation'; choose one of"),
        ({"type": "canny", "weight": 3}, "unit 1 weight must be between 0 and 2"),
        ({"type": "canny", "resize_mode": "zoom"}, "unknown resize_mode 'zoom'"),
        ({"type": "canny", "resolution": 10}, "unit 1 resolution must be between 64"),
        ({"type": "canny", "preprocess": "yes"}, "preprocess must be true or false"),
        ({"type": "canny", "colour": 1}, "unit 1 has unknown keys: colour"),
    ],
)
def test_bad_units_are_rejected(unit, message) -> None:
    req = ControlRequest(**BASE, units=[{"image": _map(), **unit}])
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        req.validate()


def test_resize_mode_accepts_a1111_names() -> None:
    req = ControlRequest(**BASE, units=[{"type": "canny", "image": _map(),
                                         "resize_mode": "Resize and Fill"}])
    req.validate()
    assert req.units[0].resize_mode == "fit"


def test_request_level_errors(tmp_path) -> None:
    with pytest.raises(RequestError, match="at least one control unit"):
        ControlRequest(**BASE, units=[]).validate()
    with pytest.raises(RequestError, match="at most 3 can be stacked"):
        ControlRequest(**BASE, units=[{"type": "canny", "image": _map()}] * 4).validate()
    with pytest.raises(RequestError, match="steps x strength < 1"):
        ControlRequest(**BASE, units=[{"type": "canny", "image": _map()}],
                       init_image=_map(), strength=0.2).validate()
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(RequestError, match="unit 1 image could not be read as an image"):
        ControlRequest(**BASE, units=[{"type": "canny", "image": str(text)}]).validate()
    with pytest.raises(RequestError, match="init image could not be read"):
        ControlRequest(**BASE, units=[{"type": "canny", "image": _map()}],
                       init_image=str(text)).validate()


def test_api_form_errors(tmp_path) -> None:
    p = tmp_path / "m.png"
    _map().save(p)
    with pytest.raises(RequestError, match=r"units lists 2 unit\(s\) but 1 image\(s\)"):
        units_from_api([str(p)], '[{"type": "canny"}, {"type": "depth"}]')
    with pytest.raises(RequestError, match="units is not valid JSON"):
        units_from_api([str(p)], '[{"type": canny}]')
    with pytest.raises(RequestError, match="send its image in `images`"):
        units_from_api([str(p)], '[{"type": "canny", "image": "x.png"}]')


has_annotators = importlib.util.find_spec("studio.backend.annotate") is not None


@pytest.mark.skipif(not has_annotators, reason="studio.backend.annotate not available yet")
@pytest.mark.parametrize("ctype", ["canny", "scribble"])
def test_preprocess_runs_annotator(studio, ctype) -> None:
    photo = Image.new("RGB", (320, 180), "white")
    d = ImageDraw.Draw(photo)
    d.rectangle((60, 40, 200, 140), fill=(30, 30, 30))
    d.ellipse((210, 50, 300, 150), outline="black", width=6)
    raw = studio.control({**BASE, "units": [{"type": ctype, "image": photo}]})
    pre = studio.control({**BASE, "units": [{"type": ctype, "image": photo, "preprocess": True,
                                             "resolution": 128}]})
    cmap = np.asarray(pre.extra_images[0].convert("L"))
    assert cmap.shape == (64, 128)
    # Annotators give white-on-black maps: mostly dark, some bright lines.
    assert (cmap < 64).mean() > 0.5 and (cmap > 128).any()
    assert np.abs(_arr(pre.image) - _arr(raw.image)).mean() > 1.0
    assert pre.info["request"]["units"][0]["prepared_from"]["preprocess"] is True


@pytest.mark.skipif(not has_annotators, reason="studio.backend.annotate not available yet")
def test_pose_preview_edit_and_rerender(studio) -> None:
    photo = Image.new("RGB", (160, 96), (120, 140, 160))
    cmap, info = annotate_image(studio, photo, "openpose", 128)
    assert "keypoints" in info and cmap.size == (info["keypoints"]["canvas_width"],
                                                  info["keypoints"]["canvas_height"])
    # A hand-made (or hand-fixed) pose: 18 COCO body points, drawn at the JSON canvas size.
    body = [v for i in range(18) for v in (20 + 3 * i, 10 + 2 * i, 1)]
    pose = {"canvas_width": 96, "canvas_height": 64, "people": [{"pose_keypoints_2d": body}]}
    drawn = render_pose(studio, json.dumps(pose))
    assert drawn.size == (96, 64) and np.asarray(drawn).max() > 0
    moved = [*body[:3], 90, 60, 1, *body[6:]]  # move keypoint 1
    redrawn = render_pose(studio, {**pose, "people": [{"pose_keypoints_2d": moved}]})
    assert not np.array_equal(np.asarray(drawn), np.asarray(redrawn))
    with pytest.raises(RequestError, match="keypoints are not valid JSON"):
        render_pose(studio, '{"people": [}')
    with pytest.raises(RequestError, match="unknown annotator 'hed'"):
        annotate_image(studio, photo, "hed")


def test_pose_editor_json_in_pixels_or_normalised_and_its_errors(studio) -> None:
    body = [v for i in range(18) for v in (20 + 3 * i, 10 + 2 * i, 1)]
    pose = {"canvas_width": 96, "canvas_height": 64, "people": [{"pose_keypoints_2d": body}]}
    drawn, pixels = edit_pose(studio, json.dumps(pose))
    assert drawn.size == (96, 64)
    assert pixels["people"][0]["pose_keypoints_2d"] == [float(v) for v in body]
    assert pixels["people"][0]["hand_left_keypoints_2d"] == []
    normalised = [v / (96 if i % 3 == 0 else 64 if i % 3 == 1 else 1)
                  for i, v in enumerate(body)]
    again, same = edit_pose(studio, {**pose, "people": [{"pose_keypoints_2d": normalised}]})
    assert np.array_equal(np.asarray(again), np.asarray(drawn)) and same == pixels
    # what cannot be drawn is a RequestError that says why (not an internal error)
    for bad, message in [({**pose, "people": [{"pose_keypoints_2d": body[:-1]}]}, "53 numbers"),
                         ({**pose, "canvas_width": 0}, "canvas_width must be a positive"),
                         ("", "keypoints are empty")]:
        with pytest.raises(RequestError, match=message):
            edit_pose(studio, bad)
        with pytest.raises(RequestError, match=message):
            render_pose(studio, bad)
