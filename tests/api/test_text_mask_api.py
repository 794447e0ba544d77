"""/text_mask through gradio_client on the tiny set (random detector: wiring, not meaning)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("text-mask") / "wide.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (72, 128, 3), np.uint8)).save(path)
    return str(path)


def test_api_lists_text_mask_with_keyword_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in api["/text_mask"]["parameters"]] == [
        "image", "text", "threshold"]


def test_text_mask_returns_a_mask_of_the_images_size_and_the_boxes(client, photo):
    mask, info = client.predict(image=handle_file(photo), text="the cat", threshold=0.0,
                                api_name="/text_mask")
    info = json.loads(info)
    assert Image.open(mask).size == (128, 72)
    assert len(info["boxes"]) == len(info["labels"]) == len(info["scores"]) > 0
    assert all(0 <= b[0] < b[2] <= 128 and 0 <= b[1] < b[3] <= 72 for b in info["boxes"])


@pytest.mark.parametrize(("args", "message"), [
    ({"text": "", "threshold": 0.3}, "text is empty"),
    ({"text": "the cat", "threshold": 2}, "threshold"),
    ({"text": "the cat", "threshold": 1.0}, "nothing matching 'the cat' was found at threshold 1"),
])
def test_bad_calls_are_explained_and_the_next_one_works(client, photo, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(image=handle_file(photo), **args, api_name="/text_mask")
    mask, _ = client.predict(image=handle_file(photo), text="a dog", threshold=0.0,
                             api_name="/text_mask")
    assert Image.open(mask).size == (128, 72)
