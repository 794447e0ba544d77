"""/layout through gradio_client, as scripts use it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from studio.backend.outputs import read_metadata

BOXES = [{"phrase": "a red bird", "box": [0.1, 0.1, 0.45, 0.5]},
         {"phrase": "a wooden bench", "box": [0.5, 0.55, 0.95, 0.9]}]
OK = {"prompt": "a park", "seed": 7, "steps": 4, "width": 64, "height": 96,
      "boxes": json.dumps(BOXES), "gligen_fraction": 0.5}


def test_api_lists_layout_with_keyword_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in api["named_endpoints"]["/layout"]["parameters"]]
    assert params == ["prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width",
                      "height", "scheduler", "fast", "boxes", "gligen_fraction", "image", "mode",
                      "append_phrases", "attend_excite", "excite_words", "model",
                      "hires_scale", "hires_upscaler", "hires_denoise", "hires_steps",
                      "hires_prompt"]


def test_layout_returns_image_and_info_with_seed(client):
    path, info = client.predict(**OK, api_name="/layout")
    info = json.loads(info)
    assert info["seed"] == 7 and info["task"] == "layout" and info["grounded_steps"] == 2
    img = Image.open(path)
    assert img.size == (64, 96)
    _, payload = read_metadata(img)
    assert payload["request"]["boxes"] == BOXES and payload["request"]["mode"] == "generate"


def test_inside_boxes_over_an_uploaded_image(client, tmp_path):
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)
    Image.fromarray(ref).save(tmp_path / "ref.png")
    path, info = client.predict(**OK, image=handle_file(str(tmp_path / "ref.png")),
                                mode="inside_boxes", api_name="/layout")
    out = np.asarray(Image.open(path).convert("RGB"))
    assert out.shape == ref.shape and json.loads(info)["mode"] == "inside_boxes"
    inside = np.zeros(ref.shape[:2], bool)
    for b in BOXES:
        x0, y0, x1, y1 = b["box"]
        inside[math.floor(y0 * 72):math.ceil(y1 * 72), math.floor(x0 * 80):math.ceil(x1 * 80)] = 1
    assert np.array_equal(out[~inside], ref[~inside])
    assert (out[inside] != ref[inside]).any(-1).mean() > 0.9


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"boxes": '[{"phrase": "a bird", "box": [0.1, 0.1, 0.4'}, "boxes is not valid JSON"),
        ({"boxes": '[{"phrase": "a bird", "box": [0.5, 0.1, 0.4, 0.3]}]'}, "box 1 has x1 <= x0"),
        ({"boxes": '[{"phrase": "", "box": [0.1, 0.1, 0.4, 0.3]}]'}, "box 1 has an empty phrase"),
        ({"boxes": json.dumps([BOXES[0]] * 31)}, "GLIGEN grounds at most 30"),
        ({"boxes": '[{"phrase": "a", "box": [0, 0, 2, 1]}]'}, r"outside \[0, 1\]"),
        ({"mode": "inside_boxes"}, "needs the image"),
    ],
)
def test_bad_layout_calls_get_clear_errors(client, change, message):
    with pytest.raises(AppError, match=message):
        client.predict(**{**OK, **change}, api_name="/layout")


def test_server_keeps_serving_after_a_malformed_call(client):
    with pytest.raises(AppError, match="boxes is not valid JSON"):
        client.predict(**{**OK, "boxes": "[{'phrase': 'a bird'}]"}, api_name="/layout")
    path, info = client.predict(**OK, api_name="/layout")
    assert json.loads(info)["seed"] == 7 and Image.open(path).size == (64, 96)


def test_canvas_boxes_become_the_api_boxes():
    from studio.ui.layout import canvas_boxes_json, resized_blank

    value = {"image": Image.new("RGB", (200, 100)), "orientation": 0,
             "boxes": [{"xmin": 50, "ymin": 25, "xmax": 150, "ymax": 75, "label": "a red bird",
                        "color": (255, 0, 0)}]}
    assert json.loads(canvas_boxes_json(value)) == [
        {"phrase": "a red bird", "box": [0.25, 0.25, 0.75, 0.75]}]
    # the blank canvas follows the output's aspect (64x96) at a drawable size (long side 512)
    blank = resized_blank(value, 64, 96)
    w, h = blank["image"].size
    assert h == 512 and abs(w / h - 64 / 96) < 0.01
    (box,) = blank["boxes"]
    assert box["label"] == "a red bird" and box["color"] == (255, 0, 0)
    # the box keeps its relative place on the new canvas
    assert json.loads(canvas_boxes_json(blank))[0]["box"] == pytest.approx(
        [0.25, 0.25, 0.75, 0.75], abs=0.01)
