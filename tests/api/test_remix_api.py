"""`/remix` through gradio_client: its parameters, [image, info], the saved inputs, clear
errors, and the server keeps serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

COMMON = {"prompt": "", "negative_prompt": "", "seed": 3, "steps": 3, "guidance_scale": 7.5,
          "width": 64, "height": 64, "scheduler": "Euler a", "fast": False}
REMIX = ["images", "weights", "text_from", "text_to", "text_amount", "image_scale"]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("remix")
    paths = []
    for i, colour in enumerate(((220, 30, 30), (30, 30, 220))):
        arr = np.full((80, 80, 3), colour, np.uint8)
        arr[20:60, 20:60] = np.random.default_rng(i).integers(0, 255, (40, 40, 3), np.uint8)
        Image.fromarray(arr).save(d / f"p{i}.png")
        paths.append(str(d / f"p{i}.png"))
    return paths


def test_api_lists_remix_with_its_parameters_in_order(client):
    api = client.view_api(print_info=False, return_format="dict")
    params = [p["parameter_name"] for p in api["named_endpoints"]["/remix"]["parameters"]]
    assert params == [*REMIX, *COMMON, "model"]


def test_remix_blends_two_pictures_and_saves_them(client, studio, pictures):
    one = [handle_file(p) for p in pictures]
    path, info = client.predict(images=one, weights="[0.25, 0.75]", text_from="", text_to="",
                                text_amount=0.5, image_scale=1.0, **COMMON, api_name="/remix")
    data = json.loads(info)
    assert data["task"] == "remix" and data["weights"] == [0.25, 0.75]
    assert Image.open(path).size == (64, 64)
    stored = data["request"]["images"]
    assert len(stored) == 2 and all((studio.outputs.root / s).is_file() for s in stored)
    variation, _ = client.predict(images=one[:1], weights="", text_from="", text_to="",
                                  text_amount=0.5, image_scale=1.0, **COMMON, api_name="/remix")
    assert not np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(variation)))


def test_remix_text_diff_through_the_api(client, pictures):
    args = dict(images=[handle_file(pictures[0])], weights="", image_scale=1.0, **COMMON)
    plain, _ = client.predict(text_from="", text_to="", text_amount=0.5, **args,
                              api_name="/remix")
    moved, info = client.predict(text_from="a red cat", text_to="a blue cat", text_amount=0.7,
                                 **args, api_name="/remix")
    assert json.loads(info)["text_diff_cosine"] < 1
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(moved)))


def test_bad_remix_gets_a_clear_error_and_the_next_call_works(client, pictures):
    with pytest.raises(AppError, match="weights has 1 number but 2 images"):
        client.predict(images=[handle_file(p) for p in pictures], weights="[1]",
                       text_from="", text_to="", text_amount=0.5, image_scale=1.0, **COMMON,
                       api_name="/remix")
    path, _ = client.predict(images=[handle_file(pictures[0])], weights="", text_from="",
                             text_to="", text_amount=0.5, image_scale=1.0, **COMMON,
                             api_name="/remix")
    assert Image.open(path).size == (64, 64)


def test_control_takes_reference_pictures_as_trailing_parameters(client, pictures):
    edges = Image.new("RGB", (64, 64))
    edges.paste((255, 255, 255), (16, 16, 48, 48))
    common = {k: v for k, v in COMMON.items() if k != "prompt"}
    args = dict(prompt="a cat", **common, images=[handle_file(pictures[0])],
                units=json.dumps([{"type": "canny", "preprocess": True}]))
    plain, _ = client.predict(**args, api_name="/control")
    styled, info = client.predict(**args, reference_images=[handle_file(pictures[1])],
                                  reference_scale=1.0, api_name="/control")
    assert json.loads(info)["references"] == 1
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(styled)))
