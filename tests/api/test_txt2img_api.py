"""/txt2img through gradio_client, as scripts use it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

from studio.backend.outputs import read_metadata

OK = {"prompt": "a red circle", "seed": 11, "steps": 2, "width": 64, "height": 64}


def test_txt2img_returns_image_with_metadata_and_seed(client, studio):
    path, info = client.predict(**OK, api_name="/txt2img")
    info = json.loads(info)
    assert info["seed"] == 11 and info["file"].endswith(".png")
    img = Image.open(path)
    params, payload = read_metadata(img)
    assert "Seed: 11" in params and payload["request"]["prompt"] == "a red circle"
    # the stored request regenerates the same pixels
    again = studio.regenerate(payload)
    assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(again.image))


def test_api_lists_named_endpoint_with_keyword_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in api["named_endpoints"]["/txt2img"]["parameters"]]
    assert params == ["prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width",
                      "height", "scheduler", "fast", "attend_excite", "excite_words", "model",
                      "hires_scale", "hires_upscaler", "hires_denoise", "hires_steps",
                      "hires_prompt"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 100}, "width must be a multiple of 8"),
        ({"width": 0}, "0"),
        ({"steps": 10000}, "10000"),
        ({"scheduler": "nope"}, "nope"),
        ({"prompt": ""}, "prompt is empty"),
    ],
)
def test_bad_requests_get_clear_errors_and_server_keeps_serving(client, change, message):
    with pytest.raises(AppError, match=message):
        client.predict(**{**OK, **change}, api_name="/txt2img")
    path, info = client.predict(**OK, api_name="/txt2img")
    assert json.loads(info)["seed"] == 11
