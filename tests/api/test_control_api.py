"""`/control` and `/annotate` through gradio_client against the served app (tiny models)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image, ImageDraw

COMMON = dict(prompt="a cat", negative_prompt="", seed=5, steps=2, guidance_scale=5.0,
              width=128, height=64, scheduler="Euler a", fast=False)
UNIT = {"type": "canny", "weight": 1.0, "start": 0.0, "end": 1.0, "preprocess": False}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("control-api")
    cmap = Image.new("RGB", (640, 360), "black")
    ImageDraw.Draw(cmap).line((0, 0, 640, 360), fill="white", width=10)
    photo = Image.new("RGB", (160, 96), "white")
    ImageDraw.Draw(photo).rectangle((30, 20, 120, 70), fill=(20, 20, 20))
    paths = {"map": root / "map.png", "photo": root / "photo.png", "text": root / "notes.txt"}
    cmap.save(paths["map"])
    photo.save(paths["photo"])
    paths["text"].write_text("not an image")
    return paths


def _control(client, images: list[Path], units: list[dict] | str, **extra) -> tuple[str, dict]:
    image, info = client.predict(
        **{**COMMON, **extra}, images=[handle_file(str(p)) for p in images],
        units=units if isinstance(units, str) else json.dumps(units), api_name="/control",
    )
    return image, json.loads(info)


def test_named_endpoints_exist(client) -> None:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/control" in api and "/annotate" in api
    names = [p["parameter_name"] for p in api["/control"]["parameters"]]
    assert names == [*COMMON, "images", "units", "init_image", "strength", "reference_images",
                     "reference_scale", "model", "hires_scale", "hires_upscaler",
                     "hires_denoise", "hires_steps", "hires_prompt"]
    assert [p["parameter_name"] for p in api["/annotate"]["parameters"]] == [
        "image", "annotator", "resolution"]


def test_control_generates(client, files) -> None:
    image, info = _control(client, [files["map"]], [{**UNIT, "resize_mode": "fit"}])
    assert Image.open(image).size == (128, 64)
    assert info["task"] == "control" and info["seed"] == 5
    assert len(info["control_maps"]) == 1 and info["control_maps"][0].endswith(".png")
    # Same seed and parameters with weight 0 is the txt2img image.
    plain, _ = _control(client, [files["map"]], [{**UNIT, "weight": 0}])
    t2i, _ = client.predict(**COMMON, api_name="/txt2img")
    diff = np.abs(np.asarray(Image.open(plain), float) - np.asarray(Image.open(t2i), float))
    assert diff.max() <= 2.0


def test_control_with_init_image(client, files) -> None:
    image, info = client.predict(
        **{**COMMON, "steps": 3}, images=[handle_file(str(files["map"]))],
        units=json.dumps([UNIT]), init_image=handle_file(str(files["photo"])), strength=0.7,
        api_name="/control",
    )
    assert Image.open(image).size == (128, 64)
    assert json.loads(info)["steps_run"] == 2


BAD_CALLS = [
    (["map", "map"], [UNIT], "units lists 1 unit(s) but 2 image(s)"),
    (["map"], [{**UNIT, "type": "sketchy"}], "unknown control type 'sketchy'"),
    (["map"], [{**UNIT, "start": 0.7, "end": 0.3}], "must be smaller than end"),
    (["map"], [{**UNIT, "end": 2}], "unit 1 end must be between 0 and 1"),
    (["text"], [UNIT], "unit 1 image could not be read as an image"),
    (["map"], "not json", "units is not valid JSON"),
]


def test_control_errors_reach_the_client(client, files) -> None:
    for images, units, message in BAD_CALLS:
        with pytest.raises(Exception) as err:
            _control(client, [files[k] for k in images], units)
        assert message in str(err.value), (message, str(err.value))
    with pytest.raises(Exception, match="init image could not be read as an image"):
        _control(client, [files["map"]], [UNIT], init_image=handle_file(str(files["text"])))
    image, _ = _control(client, [files["map"]], [UNIT])  # the server still serves
    assert Path(image).is_file()


has_annotators = importlib.util.find_spec("studio.backend.annotate") is not None
needs_annotators = pytest.mark.skipif(not has_annotators, reason="annotators not available yet")


@needs_annotators
def test_annotate_then_control_with_preprocess(client, files) -> None:
    cmap, info = client.predict(image=handle_file(str(files["photo"])), annotator="canny",
                                resolution=128, api_name="/annotate")
    info = json.loads(info)
    arr = np.asarray(Image.open(cmap).convert("L"))
    assert info["annotator"] == "canny" and (arr > 128).any() and (arr < 64).mean() > 0.5
    _, pose_info = client.predict(image=handle_file(str(files["photo"])), annotator="openpose",
                                  resolution=128, api_name="/annotate")
    assert "people" in json.loads(pose_info)["keypoints"]
    image, ginfo = _control(client, [files["photo"]],
                            [{**UNIT, "type": "scribble", "preprocess": True,
                              "resolution": 128}])
    assert Image.open(image).size == (128, 64)
    assert ginfo["request"]["units"][0]["prepared_from"]["preprocess"] is True


@needs_annotators
def test_annotate_errors(client, files) -> None:
    with pytest.raises(Exception, match="edges is not in the list of choices"):
        client.predict(image=handle_file(str(files["photo"])), annotator="edges",
                       resolution=128, api_name="/annotate")
    with pytest.raises(Exception, match="could not be read as an image"):
        client.predict(image=handle_file(str(files["text"])), annotator="canny",
                       resolution=128, api_name="/annotate")
    cmap, _ = client.predict(image=handle_file(str(files["photo"])), annotator="scribble",
                             resolution=128, api_name="/annotate")
    assert Path(cmap).is_file()
