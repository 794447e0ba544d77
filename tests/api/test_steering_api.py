"""`/prompt_edit` and `/txt2img`'s Attend-and-Excite through gradio_client: [image, info],
the source file, clear errors, and the server keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

COMMON = {"negative_prompt": "", "seed": 3, "steps": 3, "guidance_scale": 7.5, "width": 64,
          "height": 64, "scheduler": "Euler a", "fast": False}


def test_api_lists_prompt_edit_with_keyword_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in api["named_endpoints"]["/prompt_edit"]["parameters"]]
    assert params == ["prompt", *COMMON, "edited_prompt", "mode", "reweight",
                      "cross_replace", "self_replace", "local_blend", "model"]


def test_prompt_edit_returns_the_edit_and_names_the_source(client, studio):
    path, info = client.predict(prompt="a red circle and a blue square",
                                edited_prompt="a red circle and a green square", mode="replace",
                                reweight="", cross_replace=0.8, self_replace=0.4,
                                local_blend="square", **COMMON, api_name="/prompt_edit")
    data = json.loads(info)
    assert data["task"] == "prompt_edit" and data["source"].endswith(".png")
    source = studio.outputs.root / data["source"]
    assert source.is_file() and Image.open(path).size == Image.open(source).size == (64, 64)


def test_txt2img_takes_attend_excite_as_trailing_parameters(client):
    plain, _ = client.predict(prompt="a red circle and a blue square", **COMMON,
                              api_name="/txt2img")
    path, info = client.predict(prompt="a red circle and a blue square", **COMMON,
                                attend_excite=True, excite_words="circle, square",
                                api_name="/txt2img")
    data = json.loads(info)
    assert data["excite_words"] == ["circle", "square"] and data["request"]["attend_excite"]
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(path)))


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"edited_prompt": "a red circle and a big blue square"}, "token for token"),
    ({"mode": "reweight", "reweight": '{"snow": 2}'}, "'snow' is not a word"),
    ({"cross_replace": 2.0}, "cross_replace"),
])
def test_bad_prompt_edits_get_clear_errors(client, kwargs, fragment):
    args = {"prompt": "a red circle and a blue square",
            "edited_prompt": "a red circle and a green square", "mode": "replace",
            "reweight": "", "cross_replace": 0.8, "self_replace": 0.4, "local_blend": "",
            **COMMON, **kwargs}
    if kwargs.get("mode") == "reweight":
        args["edited_prompt"] = ""
    with pytest.raises(AppError, match=fragment):
        client.predict(**args, api_name="/prompt_edit")
    path, _ = client.predict(prompt="a cat", **COMMON, api_name="/txt2img")
    assert Image.open(path).size == (64, 64)
